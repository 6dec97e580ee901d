package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/registry"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", errors.New("boom"), exitError},
		{"usage", usageError{errors.New("unknown flag")}, exitUsage},
		{"not found status", status.Error(codes.NotFound, "no device"), exitNotFound},
		{"wrapped not found", fmt.Errorf("executor drain: %w", status.Error(codes.NotFound, "x")), exitNotFound},
		{"coded", &codedError{code: codes.PermissionDenied, msg: "groups: PermissionDenied: no"}, exitRefused},
		{"unauthenticated", status.Error(codes.Unauthenticated, "no key"), exitRefused},
		{"unavailable", &codedError{code: codes.Unavailable, msg: "no control plane"}, exitUnavailable},
		{"deadline", fmt.Errorf("etcd: %w", context.DeadlineExceeded), exitUnavailable},
		{"registry not found", fmt.Errorf("x: %w", registry.ErrNotFound), exitNotFound},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad"), exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// TestUsageExitCode checks that what cobra refuses before a command runs
// exits 2, and that an error of the command itself does not.
func TestUsageExitCode(t *testing.T) {
	for _, args := range [][]string{
		{"nope"},
		{"version", "extra"},
		{"ctl", "groups", "--no-such-flag"},
		{"executor"}, // --group and --token-public-key are required
	} {
		_, _, err := berth(t, args...)
		if got := exitCode(err); got != exitUsage {
			t.Errorf("berth %s: err %v, exit %d; want %d", strings.Join(args, " "), err, got, exitUsage)
		}
	}
	_, _, err := berth(t, "ctl", "groups", "--controlplane", freeAddr(t))
	if got := exitCode(err); got != exitUnavailable {
		t.Errorf("ctl groups with no control plane: err %v, exit %d; want %d", err, got, exitUnavailable)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := berth(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "berth ") || !strings.Contains(out, " commit ") || !strings.Contains(out, "go1.") {
		t.Errorf("version = %q, want berth <version> commit <commit> <go version>", out)
	}
}

// TestKeygenRefusesToOverwrite checks that keygen keeps existing keys
// unless --force.
func TestKeygenRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "s.pem"), filepath.Join(dir, "p.pem")
	args := []string{"keygen", "--private", priv, "--public", pub}
	if _, _, err := berth(t, args...); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := berth(t, args...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second keygen = %v, want a refusal naming --force", err)
	}
	if after, _ := os.ReadFile(priv); string(after) != string(before) {
		t.Error("keygen without --force changed the private key")
	}
	if _, _, err := berth(t, append(args, "--force")...); err != nil {
		t.Fatalf("keygen --force: %v", err)
	}
	if after, _ := os.ReadFile(priv); string(after) == string(before) {
		t.Error("keygen --force kept the old private key")
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}
