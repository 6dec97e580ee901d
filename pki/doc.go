// Package pki issues the X.509 certificates berth runs on, so that an
// operator needs no openssl: a CA (ECDSA P-256), server certificates with
// DNS and IP SANs, device client certificates (the device id as CN and as
// the SAN URI berth://device/<id>) and service or operator client
// certificates (the name as CN and as the SAN URI berth://service/<name>).
// Keys are written 0600 and existing files are never overwritten unless
// asked. `berth cert` and `berth dev` use it.
package pki
