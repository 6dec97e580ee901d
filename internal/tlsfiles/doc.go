// Package tlsfiles builds TLS configurations from PEM files and reloads
// them without a restart: a server's certificate and key, and the CA pool
// client certificates are verified against, are read again when their
// files change (checked at most once a second); a broken new file is
// logged and the last good one stays. It also builds client
// configurations (a CA file, an optional client certificate, a server
// name). TLS 1.3 is the minimum everywhere.
package tlsfiles
