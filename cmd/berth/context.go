package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// contextEnv names the environment variable that says where the context
// file is (empty or "off": none).
const contextEnv = "BERTH_CONTEXT"

// apiKeyFileEnv names the environment variable naming a file that holds
// ctl's API key.
const apiKeyFileEnv = "BERTH_API_KEY_FILE"

// etcdEnv names the environment variable giving --etcd (servers and the
// break-glass `ctl registry`).
const etcdEnv = "BERTH_ETCD"

// devContext is what `berth dev` writes for ctl: where its control plane
// is and the paths of the files that let a client in. It never holds a
// secret: the API key stays in its own 0600 file, named here.
type devContext struct {
	// ControlPlane is the control plane's address.
	ControlPlane string `json:"controlplane"`
	// CA is the PEM file of the CA the servers' certificates chain to;
	// empty when berth dev serves plaintext.
	CA string `json:"ca,omitempty"`
	// APIKeyFile holds the admin API key (mode 0600).
	APIKeyFile string `json:"api_key_file,omitempty"`
	// Etcd is the embedded etcd's client URL, for `ctl registry`.
	Etcd string `json:"etcd,omitempty"`
	// PublicKeyFile holds the token verification key.
	PublicKeyFile string `json:"public_key_file,omitempty"`
	// WrittenBy says which process wrote the file.
	WrittenBy string `json:"written_by,omitempty"`
}

// defaultContextPath is where berth dev writes its context unless told:
// $XDG_CONFIG_HOME/berth/context.json (os.UserConfigDir); empty when there
// is no such directory.
func defaultContextPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "berth", "context.json")
}

// contextPath is the context file in effect: $BERTH_CONTEXT when set, else
// defaultContextPath. Empty: none.
func contextPath() string {
	if p, ok := os.LookupEnv(contextEnv); ok {
		if p == "off" {
			return ""
		}
		return p
	}
	return defaultContextPath()
}

// writeContext writes c to path with mode 0600 (its directory 0700),
// replacing the file atomically.
func writeContext(path string, c devContext) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("context file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".context-*.json")
	if err != nil {
		return fmt.Errorf("context file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("context file: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("context file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("context file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("context file: %w", err)
	}
	return nil
}

// readContext reads the context file at path; ok is false when there is
// none.
func readContext(path string) (c devContext, ok bool, err error) {
	if path == "" {
		return devContext{}, false, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return devContext{}, false, nil
	}
	if err != nil {
		return devContext{}, false, fmt.Errorf("context file %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return devContext{}, false, fmt.Errorf("context file %s: %w (remove it, or set %s=off)", path, err, contextEnv)
	}
	return c, true, nil
}

// removeContext removes the context file at path if it still holds c:
// another berth dev may have replaced it since.
func removeContext(path string, c devContext) {
	cur, ok, err := readContext(path)
	if err == nil && ok && cur == c {
		os.Remove(path)
	}
}

// exportLines are the shell lines that give ctl (and simulate) the
// context through the environment.
func (c devContext) exportLines() []string {
	lines := []string{"export " + controlPlaneEnv + "=" + shellQuote(c.ControlPlane)}
	if c.CA != "" {
		lines = append(lines, "export "+caEnv+"="+shellQuote(c.CA))
	}
	if c.APIKeyFile != "" {
		lines = append(lines, "export "+apiKeyFileEnv+"="+shellQuote(c.APIKeyFile))
	}
	if c.Etcd != "" {
		lines = append(lines, "export "+etcdEnv+"="+shellQuote(c.Etcd))
	}
	return lines
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '.' || r == '-' || r == '_' || r == ':' || r == ',' || r == '=') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
