package embedetcd_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/embedetcd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartServesClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			srv.Close()
		}
	})

	u, err := url.Parse(srv.Endpoint())
	if err != nil {
		t.Fatalf("Endpoint() = %q: %v", srv.Endpoint(), err)
	}
	if u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "0" || u.Port() == "" {
		t.Errorf("Endpoint() = %q, want http://127.0.0.1:<free port>", srv.Endpoint())
	}

	cli, err := srv.Client()
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Errorf("Get(k) = %v, want one value v", resp.Kvs)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("client Close: %v", err)
	}

	srv.Close()
	closed = true
	// A clean stop reports no fatal error: Err is closed or empty.
	select {
	case err := <-srv.Err():
		if err != nil {
			t.Errorf("Err() after Close = %v, want none", err)
		}
	default:
	}
}

func TestStartErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	busy, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer busy.Close()
	busyAddr := strings.TrimPrefix(busy.Endpoint(), "http://")

	tests := []struct {
		name    string
		cfg     embedetcd.Config
		wantErr string
	}{
		{name: "empty dir", cfg: embedetcd.Config{}, wantErr: "Dir is required"},
		{name: "client port in use", cfg: embedetcd.Config{Dir: t.TempDir(), ClientAddr: busyAddr}, wantErr: "embedetcd: start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := embedetcd.Start(ctx, tt.cfg)
			if err == nil {
				srv.Close()
				t.Fatalf("Start(%+v) = nil error, want one containing %q", tt.cfg, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Start(%+v) = %v, want an error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}
