package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/pki"
)

// clock is a fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// writePair writes p; each write gets a later mtime than the last, so
// that a rewrite shows even on coarse file system clocks.
func (fx *fixture) writePair(t *testing.T, p *pki.Pair, cf, kf string) {
	t.Helper()
	if err := p.Write(cf, kf, true); err != nil {
		t.Fatal(err)
	}
	fx.stamp = fx.stamp.Add(time.Second)
	for _, f := range []string{cf, kf} {
		if err := os.Chtimes(f, fx.stamp, fx.stamp); err != nil {
			t.Fatal(err)
		}
	}
}

// server serves TLS on loopback with cfg: each connection is handshaken,
// answered with one byte and closed.
func server(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte{1})
				}
			})
		}
	})
	return lis.Addr().String()
}

// dial handshakes with addr and returns the server's leaf certificate.
func dial(cfg *tls.Config, addr string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// TLS 1.3: a refused client certificate shows on the first read.
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

type fixture struct {
	dir            string
	ca             *pki.Pair
	caFile, cf, kf string
	stamp          time.Time // of the last write
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.pem"), cf: filepath.Join(dir, "server.pem"), kf: filepath.Join(dir, "server-key.pem"), stamp: time.Unix(1_700_000_000, 0)}
	if err := ca.Write(f.caFile, filepath.Join(dir, "ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) serverPair(t *testing.T) *pki.Pair {
	t.Helper()
	p, err := f.ca.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServerReloadsRotatedCertificate(t *testing.T) {
	f := newFixture(t)
	first, second := f.serverPair(t), f.serverPair(t)
	f.writePair(t, first, f.cf, f.kf)
	clk := &clock{t: time.Unix(0, 0)}
	scfg, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf, Key: f.kf}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	addr := server(t, scfg)
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: f.caFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		c, err := dial(ccfg, addr)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return c.SerialNumber.String()
	}
	if got, want := serial(), first.Cert.SerialNumber.String(); got != want {
		t.Fatalf("serial = %s, want the first %s", got, want)
	}

	f.writePair(t, second, f.cf, f.kf)
	if got, want := serial(), first.Cert.SerialNumber.String(); got != want {
		t.Errorf("within the check interval: serial = %s, want still the first %s", got, want)
	}
	clk.add(tlsfiles.CheckInterval)
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("after rotation: serial = %s, want the second %s", got, want)
	}

	// A broken new file keeps the last good pair.
	if err := os.WriteFile(f.cf, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	clk.add(tlsfiles.CheckInterval)
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("after a broken write: serial = %s, want the last good %s", got, want)
	}
	// A mismatched pair (new cert, old key) is broken too.
	third := f.serverPair(t)
	if err := os.WriteFile(f.cf, third.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	clk.add(tlsfiles.CheckInterval)
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("after a mismatched pair: serial = %s, want the last good %s", got, want)
	}
	f.writePair(t, third, f.cf, f.kf)
	clk.add(tlsfiles.CheckInterval)
	if got, want := serial(), third.Cert.SerialNumber.String(); got != want {
		t.Errorf("after the pair is fixed: serial = %s, want %s", got, want)
	}
}

func TestClientCertificates(t *testing.T) {
	f := newFixture(t)
	f.writePair(t, f.serverPair(t), f.cf, f.kf)
	other, err := pki.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	client := func(ca *pki.Pair, name string) tlsfiles.ClientFiles {
		t.Helper()
		p, err := ca.IssueDevice(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(f.dir, name+".pem"), filepath.Join(f.dir, name+"-key.pem")
		f.writePair(t, p, cf, kf)
		return tlsfiles.ClientFiles{CA: f.caFile, Cert: cf, Key: kf}
	}
	ours, foreign := client(f.ca, "ours"), client(other, "foreign")
	none := tlsfiles.ClientFiles{CA: f.caFile}

	// seen records the client certificate the server saw.
	type seen struct {
		mu sync.Mutex
		cn string
	}
	tests := []struct {
		name     string
		clientCA string
		files    tlsfiles.ClientFiles
		wantErr  bool
		wantCN   string
	}{
		{"requested, none given", "", none, false, ""},
		{"requested, ours passed on", "", ours, false, "ours"},
		{"requested, foreign passed on unverified", "", foreign, false, "foreign"},
		{"verified, none given", f.caFile, none, false, ""},
		{"verified, ours", f.caFile, ours, false, "ours"},
		{"verified, foreign refused", f.caFile, foreign, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scfg, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf, Key: f.kf, ClientCA: tc.clientCA}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var s seen
			scfg.VerifyConnection = func(cs tls.ConnectionState) error {
				s.mu.Lock()
				defer s.mu.Unlock()
				if len(cs.PeerCertificates) > 0 {
					s.cn = cs.PeerCertificates[0].Subject.CommonName
				}
				return nil
			}
			if tc.clientCA != "" {
				// VerifyConnection must reach the per-client config too.
				inner := scfg.GetConfigForClient
				scfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
					c, err := inner(h)
					if err != nil {
						return nil, err
					}
					c = c.Clone()
					c.VerifyConnection = scfg.VerifyConnection
					return c, nil
				}
			}
			addr := server(t, scfg)
			ccfg, err := tlsfiles.ClientConfig(tc.files, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = dial(ccfg, addr)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("handshake err = %v, want error %v", err, tc.wantErr)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.cn != tc.wantCN {
				t.Errorf("server saw client CN %q, want %q", s.cn, tc.wantCN)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	f := newFixture(t)
	f.writePair(t, f.serverPair(t), f.cf, f.kf)
	junk := filepath.Join(f.dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		build   func() error
		wantErr error
	}{
		{"server without key", func() error {
			_, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf}, nil, nil)
			return err
		}, tlsfiles.ErrIncomplete},
		{"client cert without key", func() error {
			_, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{Cert: f.cf}, nil, nil)
			return err
		}, tlsfiles.ErrIncomplete},
		{"CA file without certificates", func() error {
			_, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: junk}, nil, nil)
			return err
		}, tlsfiles.ErrNoCerts},
		{"client CA without certificates", func() error {
			_, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf, Key: f.kf, ClientCA: junk}, nil, nil)
			return err
		}, tlsfiles.ErrNoCerts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.build(); !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	if _, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf, Key: junk}, nil, nil); err == nil {
		t.Error("ServerConfig with a broken key: no error")
	}
}

func TestCheckPlaintext(t *testing.T) {
	tests := []struct {
		addr     string
		insecure bool
		wantErr  bool
	}{
		{"127.0.0.1:7070", false, false},
		{"[::1]:7070", false, false},
		{"0.0.0.0:7070", false, true},
		{"[::]:7070", false, true},
		{"10.1.2.3:7070", false, true},
		{"10.1.2.3:7070", true, false},
	}
	for _, tc := range tests {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		err = tlsfiles.CheckPlaintext(a, tc.insecure)
		if gotErr := err != nil; gotErr != tc.wantErr {
			t.Errorf("CheckPlaintext(%s, insecure %v) = %v, want error %v", tc.addr, tc.insecure, err, tc.wantErr)
		}
		if err != nil && !errors.Is(err, tlsfiles.ErrPlaintext) {
			t.Errorf("CheckPlaintext(%s): err = %v, want ErrPlaintext", tc.addr, err)
		}
	}
}

// TestClientCAReload: a rotated client CA file is picked up without a
// restart; a broken one keeps the last good pool.
func TestClientCAReload(t *testing.T) {
	f := newFixture(t)
	f.writePair(t, f.serverPair(t), f.cf, f.kf)
	newCA, err := pki.NewCA("new", 0)
	if err != nil {
		t.Fatal(err)
	}
	clientCA := filepath.Join(f.dir, "client-ca.pem")
	writeCA := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(clientCA, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f.stamp = f.stamp.Add(time.Second)
		if err := os.Chtimes(clientCA, f.stamp, f.stamp); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(f.ca.CertPEM())
	dev, err := newCA.IssueDevice("d1", 0)
	if err != nil {
		t.Fatal(err)
	}
	dcf, dkf := filepath.Join(f.dir, "d1.pem"), filepath.Join(f.dir, "d1-key.pem")
	f.writePair(t, dev, dcf, dkf)
	clk := &clock{t: time.Unix(0, 0)}
	scfg, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: f.cf, Key: f.kf, ClientCA: clientCA}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	addr := server(t, scfg)
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: f.caFile, Cert: dcf, Key: dkf}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		write   []byte // nil: no change
		wantErr bool
	}{
		{"old client CA: the new CA's client is refused", nil, true},
		{"rotated to the new CA: accepted", newCA.CertPEM(), false},
		{"broken file: the last good pool stays", []byte("junk"), false},
	}
	for _, st := range steps {
		if st.write != nil {
			writeCA(st.write)
			clk.add(tlsfiles.CheckInterval)
		}
		_, err := dial(ccfg, addr)
		if gotErr := err != nil; gotErr != st.wantErr {
			t.Errorf("%s: handshake err = %v, want error %v", st.name, err, st.wantErr)
		}
	}
}
