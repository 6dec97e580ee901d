package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestCtlListings: the listings follow next_page_token to the end, stop at
// --limit, filter by group; group delete is refused while an executor
// serves the group.
func TestCtlListings(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t)
	ctl := func(args ...string) string {
		t.Helper()
		out, errOut, err := berth(t, append([]string{"ctl", "--controlplane", cp.addr, "--page-size", "2"}, args...)...)
		if err != nil {
			t.Fatalf("berth ctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	for i := 1; i <= 5; i++ {
		ctl("group", "put", fmt.Sprintf("g%d", i), "--capacity", "100")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	for i := range 7 {
		if err := cp.reg.PutAssignment(ctx, registry.Assignment{DeviceID: fmt.Sprintf("d%d", i), GroupID: fmt.Sprintf("g%d", 1+i%2), Label: "default", AssignedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(out string) []string {
		t.Helper()
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		var got []string
		for _, r := range rows {
			id, _ := r["id"].(string)
			if d, ok := r["device"].(string); ok {
				id = d
			}
			got = append(got, id)
		}
		return got
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "every record listed", func() bool {
		return len(ids(ctl("devices", "-o", "json"))) == 7
	})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"groups, every page", []string{"groups"}, "[g1 g2 g3 g4 g5]"},
		{"groups up to a limit", []string{"groups", "--limit", "3"}, "[g1 g2 g3]"},
		{"groups, a limit past the end", []string{"groups", "--limit", "30"}, "[g1 g2 g3 g4 g5]"},
		{"devices, every page", []string{"devices"}, "[d0 d1 d2 d3 d4 d5 d6]"},
		{"devices of one group", []string{"devices", "--group", "g2"}, "[d1 d3 d5]"},
		{"devices of one group up to a limit", []string{"devices", "--group", "g1", "--limit", "1"}, "[d0]"},
		{"devices of an empty group", []string{"devices", "--group", "g5"}, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(ids(ctl(append(tt.args, "-o", "json")...))); got != tt.want {
				t.Errorf("ctl %v = %s, want %s", tt.args, got, tt.want)
			}
		})
	}
	if out := ctl("devices"); !strings.Contains(out, "DEVICE") || strings.Count(out, "\n") != 8 {
		t.Errorf("devices table: want a header and 7 lines:\n%s", out)
	}

	// An executor serves g3: it cannot be deleted until it is gone.
	r, err := cp.reg.NewRegistration(registry.Executor{ID: "g3-x", GroupID: "g3", Address: "127.0.0.1:1", Capacity: 10}, registry.DefaultRegistrationConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	stop := sync.OnceFunc(func() { rcancel(); <-rdone })
	defer stop()
	testutil.WaitFor(t, testutil.DefaultTimeout, "g3-x listed", func() bool {
		return strings.Contains(ctl("executors", "--group", "g3"), "g3-x")
	})
	_, _, err = berth(t, "ctl", "--controlplane", cp.addr, "group", "delete", "g3")
	if err == nil || !strings.Contains(err.Error(), "group delete: FailedPrecondition") || !strings.Contains(err.Error(), "g3-x") {
		t.Errorf("group delete g3 with an executor = %v; want FailedPrecondition naming g3-x", err)
	}
	stop()
	testutil.WaitFor(t, testutil.DefaultTimeout, "g3-x gone", func() bool {
		return !strings.Contains(ctl("executors"), "g3-x")
	})
	if out := ctl("group", "delete", "g3"); !strings.Contains(out, "group g3 deleted") {
		t.Errorf("group delete g3: %q", out)
	}
	_, errOut, err := berth(t, "ctl", "--controlplane", cp.addr, "group", "delete", "g1")
	if err != nil || !strings.Contains(errOut, "4 assignment record(s) still name it") {
		t.Errorf("group delete g1 = %v, stderr %q; want a note on its 4 records", err, errOut)
	}
	if got := fmt.Sprint(ids(ctl("groups", "-o", "json"))); got != "[g2 g4 g5]" {
		t.Errorf("groups after deletes = %s, want [g2 g4 g5]", got)
	}
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "group", "delete", "g3"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("group delete g3 twice = %v; want NotFound", err)
	}
}
