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
	"google.golang.org/grpc"
)

// Server is a running embedded etcd.
type Server struct {
	etcd   *embed.Etcd
	scheme string // of the client URL
	once   sync.Once
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
	// ClientTLS, when set, serves clients over TLS (https) only.
	ClientTLS *ClientTLS
}

// ClientTLS are the files of an embedded etcd's client TLS.
type ClientTLS struct {
	// CertFile and KeyFile are the server's certificate and key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the server require client
	// certificates chaining to it.
	ClientCAFile string
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
	scheme := "http"
	if t := cfg.ClientTLS; t != nil {
		scheme = "https"
		ec.ClientTLSInfo.CertFile = t.CertFile
		ec.ClientTLSInfo.KeyFile = t.KeyFile
		ec.ClientTLSInfo.TrustedCAFile = t.ClientCAFile
		ec.ClientTLSInfo.ClientCertAuth = t.ClientCAFile != ""
	}
	cu := url.URL{Scheme: scheme, Host: cfg.ClientAddr}
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
	return &Server{etcd: e, scheme: scheme}, nil
}

// ErrTLSClient is returned by Client for a server serving TLS: its
// clients need their own TLS configuration.
var ErrTLSClient = errors.New("embedetcd: the server serves TLS; build a client with its TLS configuration")

// Endpoint returns the client URL, for example "http://127.0.0.1:40123"
// ("https://…" with ClientTLS).
func (s *Server) Endpoint() string { return s.scheme + "://" + s.etcd.Clients[0].Addr().String() }

// Client returns a new plaintext client of the server; the caller closes
// it. It fails with ErrTLSClient for a server serving TLS.
func (s *Server) Client() (*clientv3.Client, error) { return s.ClientWith(nil) }

// ClientWith is Client with the client's logs going to log (nil:
// discarded) and opts added to its dial options.
func (s *Server) ClientWith(log *zap.Logger, opts ...grpc.DialOption) (*clientv3.Client, error) {
	if s.scheme != "http" {
		return nil, ErrTLSClient
	}
	if log == nil {
		log = zap.NewNop()
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      log,
		DialOptions: opts,
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
