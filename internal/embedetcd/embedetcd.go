// Package embedetcd starts a single-member etcd server inside the process, on
// free loopback ports, for `berth dev` and for tests.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	once sync.Once
}

// Config says where the server keeps its data and how it logs.
type Config struct {
	// Dir holds the data; it is created if missing.
	Dir string
	// ClientAddr is host:port for clients; "127.0.0.1:0" picks a free port.
	ClientAddr string
	// Verbose turns etcd's own logging on (warnings only otherwise).
	Verbose bool
	// AutoCompactionRetention keeps this much history (0 disables).
	AutoCompactionRetention time.Duration
	// UnsafeNoFsync skips fsync on writes: a crash of the machine may lose
	// acknowledged writes. For tests only, where many packages share one
	// disk and durability across machine crashes is not what is tested.
	UnsafeNoFsync bool
	// QuotaBackendBytes is etcd's space quota (0: etcd's default, 2 GiB).
	// Past it etcd raises its NOSPACE alarm and refuses every write.
	QuotaBackendBytes int64
}

// Start starts the server and waits until it serves, or ctx is done.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedetcd: Dir is required")
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:0"
	}
	ec := embed.NewConfig()
	ec.Dir = cfg.Dir
	ec.Name = "berth-dev"
	cu := url.URL{Scheme: "http", Host: cfg.ClientAddr}
	peer, err := url.Parse("http://127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ec.ListenClientUrls = []url.URL{cu}
	ec.AdvertiseClientUrls = []url.URL{cu}
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.LogLevel = "error"
	if cfg.Verbose {
		ec.LogLevel = "info"
	}
	if !cfg.Verbose {
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	if cfg.AutoCompactionRetention > 0 {
		ec.AutoCompactionMode = "periodic"
		ec.AutoCompactionRetention = cfg.AutoCompactionRetention.String()
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedetcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Server{etcd: e}, nil
}

// Endpoint returns the client URL, for example "http://127.0.0.1:40123".
func (s *Server) Endpoint() string { return "http://" + s.etcd.Clients[0].Addr().String() }

// Client returns a new client of the server; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the server and waits for it. It may be called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
	})
}
