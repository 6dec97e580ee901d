package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrExists is returned by Write when a file is there already and
// overwriting was not asked for.
var ErrExists = errors.New("pki: file exists")

// Write writes the certificate (0644) and the key (0600) to certFile and
// keyFile. Unless overwrite, it refuses, writing nothing, when either
// file exists.
func (p *Pair) Write(certFile, keyFile string, overwrite bool) error {
	keyPEM, err := p.KeyPEM()
	if err != nil {
		return err
	}
	if !overwrite {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Stat(f); err == nil {
				return fmt.Errorf("%w: %s (remove it or ask to overwrite)", ErrExists, f)
			}
		}
	}
	if err := writeFile(keyFile, keyPEM, 0o600, overwrite); err != nil {
		return err
	}
	return writeFile(certFile, p.CertPEM(), 0o644, overwrite)
}

// writeFile writes data to name with perm; without overwrite it fails on
// an existing file (O_EXCL) rather than truncate it. An overwritten file
// gets perm too.
func writeFile(name string, data []byte, perm fs.FileMode, overwrite bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if !overwrite {
		flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(name, flags, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		return fmt.Errorf("pki: write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki: chmod %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", name, err)
	}
	return nil
}

// Load reads a certificate and its private key from PEM files.
func Load(certFile, keyFile string) (*Pair, error) {
	cert, err := ReadCert(certFile)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("pki: %s: no PEM block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: not a signing key", keyFile)
	}
	return &Pair{Cert: cert, Key: signer}, nil
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(certFile string) (*x509.Certificate, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: no PEM certificate", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", certFile, err)
	}
	return c, nil
}
