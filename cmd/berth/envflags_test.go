package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestFlagEnv(t *testing.T) {
	for name, want := range map[string]string{"etcd": "BERTH_ETCD", "etcd-ca": "BERTH_ETCD_CA", "queue-bytes-per-device": "BERTH_QUEUE_BYTES_PER_DEVICE"} {
		if got := flagEnv(name); got != want {
			t.Errorf("flagEnv(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	env := map[string]string{
		"BERTH_LISTEN":        ":7443",
		"BERTH_CAPACITY":      "500",
		"BERTH_DRAIN_TIMEOUT": "2m",
		"BERTH_LABELS":        "eu,gold",
		"BERTH_ETCD_PASSWORD": "s3cret",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "")
	capacity := fs.Int("capacity", 10, "")
	drain := fs.Duration("drain-timeout", time.Second, "")
	labels := fs.StringSlice("labels", []string{"default"}, "")
	pw := fs.String("etcd-password", "", "")
	untouched := fs.String("group", "g", "")
	if err := fs.Parse([]string{"--capacity", "7"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *listen != ":7443" || *drain != 2*time.Minute || strings.Join(*labels, ",") != "eu,gold" {
		t.Errorf("from the environment: listen %q, drain-timeout %v, labels %v", *listen, *drain, *labels)
	}
	if *capacity != 7 {
		t.Errorf("capacity = %d: the flag given must win over BERTH_CAPACITY", *capacity)
	}
	if *pw != "" {
		t.Error("BERTH_ETCD_PASSWORD set --etcd-password through the generic path (it is read only with --etcd-user)")
	}
	if *untouched != "g" {
		t.Errorf("group = %q with no BERTH_GROUP", *untouched)
	}

	env["BERTH_GROUP"] = "x"
	env["BERTH_CAPACITY"] = "lots"
	fs2 := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs2.Int("capacity", 10, "")
	err := applyEnv(fs2, lookup)
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "BERTH_CAPACITY") {
		t.Errorf("a bad BERTH_CAPACITY = %v (exit %d), want a usage error naming it", err, exitCode(err))
	}
}

// TestEnvFlagsOnCommands checks that server commands read BERTH_* and that
// a flag wins, through the real command line.
func TestEnvFlagsOnCommands(t *testing.T) {
	t.Setenv("BERTH_DEVICES", "many")
	_, _, err := berth(t, "simulate")
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "BERTH_DEVICES") {
		t.Errorf("simulate with BERTH_DEVICES=many = %v, want a usage error naming it", err)
	}
	t.Setenv("BERTH_DEVICES", "0")
	if _, _, err := berth(t, "simulate"); err == nil || !strings.Contains(err.Error(), "--devices must be positive") {
		t.Errorf("simulate with BERTH_DEVICES=0 = %v, want it refused", err)
	}
	t.Setenv("BERTH_DEVICES", "")
	t.Setenv("BERTH_LOG_LEVEL", "loud")
	if _, _, err := berth(t, "executor", "--group", "g", "--token-public-key", "none.pem"); err == nil || !strings.Contains(err.Error(), "--log-level \"loud\"") {
		t.Errorf("executor with BERTH_LOG_LEVEL=loud = %v, want the inherited flag set from it", err)
	}
	if _, _, err := berth(t, "executor", "--log-level", "info", "--group", "g", "--token-public-key", "none.pem"); err == nil || strings.Contains(err.Error(), "loud") {
		t.Errorf("executor --log-level info with BERTH_LOG_LEVEL=loud = %v, want the flag to win", err)
	}
}
