package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CheckInterval is how often, at most, the files are looked at again.
const CheckInterval = time.Second

// ErrNoCerts is returned for a CA file holding no certificate.
var ErrNoCerts = errors.New("tlsfiles: no certificate in CA file")

// stamp is what tells a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

// statAll returns the stamps of files.
func statAll(files []string) ([]stamp, error) {
	out := make([]stamp, len(files))
	for i, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		out[i] = stamp{st.ModTime(), st.Size()}
	}
	return out, nil
}

// watched is a value loaded from files, loaded again when they change.
type watched[T any] struct {
	files []string
	load  func() (T, error)
	what  string
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	val     T
	stamps  []stamp
	checked time.Time
}

// newWatched loads the value once; an error here is the caller's.
func newWatched[T any](what string, files []string, load func() (T, error), log *slog.Logger, now func() time.Time) (*watched[T], error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	stamps, err := statAll(files)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: %s: %w", what, err)
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	return &watched[T]{files: files, load: load, what: what, log: log, now: now, val: v, stamps: stamps, checked: now()}, nil
}

// get returns the current value, looking at the files first when the last
// look is CheckInterval old. A change that does not load keeps the last
// good value; it is logged once per change.
func (w *watched[T]) get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if now.Sub(w.checked) < CheckInterval {
		return w.val
	}
	w.checked = now
	stamps, err := statAll(w.files)
	if err != nil {
		w.log.Warn("TLS files unreadable; keeping the loaded ones", "what", w.what, "err", err)
		return w.val
	}
	if equalStamps(stamps, w.stamps) {
		return w.val
	}
	w.stamps = stamps
	v, err := w.load()
	if err != nil {
		w.log.Error("TLS files changed but do not load; keeping the last good ones", "what", w.what, "err", err)
		return w.val
	}
	w.val = v
	w.log.Info("TLS files reloaded", "what", w.what, "files", w.files)
	return v
}

func equalStamps(a, b []stamp) bool {
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size {
			return false
		}
	}
	return len(a) == len(b)
}

// KeyPair is a certificate and key read from files and read again when
// they change.
type KeyPair struct{ w *watched[*tls.Certificate] }

// NewKeyPair loads certFile and keyFile (PEM). log and now may be nil.
func NewKeyPair(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*KeyPair, error) {
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: key pair %s, %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}
	w, err := newWatched("key pair", []string{certFile, keyFile}, load, log, now)
	if err != nil {
		return nil, err
	}
	return &KeyPair{w: w}, nil
}

// Certificate returns the current certificate.
func (k *KeyPair) Certificate() *tls.Certificate { return k.w.get() }

// GetCertificate suits tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.w.get(), nil
}

// GetClientCertificate suits tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.w.get(), nil
}

// CAPool is a pool of CA certificates read from a PEM file and read again
// when it changes.
type CAPool struct{ w *watched[*x509.CertPool] }

// NewCAPool loads file. log and now may be nil.
func NewCAPool(file string, log *slog.Logger, now func() time.Time) (*CAPool, error) {
	w, err := newWatched("CA pool", []string{file}, func() (*x509.CertPool, error) { return ReadCAPool(file) }, log, now)
	if err != nil {
		return nil, err
	}
	return &CAPool{w: w}, nil
}

// Pool returns the current pool.
func (p *CAPool) Pool() *x509.CertPool { return p.w.get() }

// ReadCAPool reads every certificate of a PEM file into a pool.
func ReadCAPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: %s", ErrNoCerts, file)
	}
	return pool, nil
}
