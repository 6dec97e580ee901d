package execclient_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/pki"
	"github.com/berthproject/berth/registry"
)

// TestPoolTLSName: over TLS, the pool checks an executor's certificate by
// the TLS name of its registry record, not by its address, also when it
// dials the executor's internal address (whose listener serves the same
// certificate).
func TestPoolTLSName(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer([]string{"executor.test"}, 0) // no IP SAN
	if err != nil {
		t.Fatal(err)
	}
	caFile, cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem")
	if err := ca.Write(caFile, filepath.Join(dir, "ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(cf, kf, false); err != nil {
		t.Fatal(err)
	}
	scfg, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: cf, Key: kf}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A server without the internal service: a call that reaches it over
	// TLS answers UNIMPLEMENTED.
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	addr := lis.Addr().String()

	ccfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: caFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		tlsName  string
		internal bool // addr is the record's internal address
		want     codes.Code
	}{
		{"by the record's TLS name", "executor.test", false, codes.Unimplemented},
		{"by the address: refused", "", false, codes.Unavailable},
		{"internal address, by the record's TLS name", "executor.test", true, codes.Unimplemented},
		{"internal address, by the address: refused", "", true, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			execs := &fakeExecutors{}
			execs.mu.Lock()
			rec := registry.Executor{ID: "e1", GroupID: "g1", Address: addr, TLSName: tc.tlsName, Capacity: 1}
			if tc.internal {
				rec.Address, rec.InternalAddress = "10.0.0.1:7000", addr
			}
			execs.snap = registry.NewSnapshot(1, nil, []registry.Executor{rec})
			execs.mu.Unlock()
			cfg := testConfig()
			cfg.TLS = ccfg
			p := newPool(t, cfg, execclient.Deps{Signer: &countingSigner{clk: newClock()}, Executors: execs})
			c, release, err := p.Acquire(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = c.Deliver(ctx, &executorv1.DeliverRequest{})
			if got := status.Code(err); got != tc.want {
				t.Errorf("Deliver: %v, want %v", err, tc.want)
			}
		})
	}
}
