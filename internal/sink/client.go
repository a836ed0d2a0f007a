package sink

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Clients hands out HTTP clients: one shared, pooled client per distinct TLS setting, so
// connections are kept alive and reused across subscriptions posting to the same host.
type Clients struct {
	mu      sync.Mutex
	clients map[[32]byte]*http.Client
}

// NewClients returns an empty client cache.
func NewClients() *Clients { return &Clients{clients: map[[32]byte]*http.Client{}} }

// For returns the client for a CA bundle (PEM, may be empty) and verification setting.
func (c *Clients) For(caPEM []byte, insecureSkipVerify bool) (*http.Client, error) {
	h := sha256.New()
	h.Write(caPEM)
	if insecureSkipVerify {
		h.Write([]byte{1})
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[key]; ok {
		return cl, nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	if len(caPEM) > 0 || insecureSkipVerify {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecureSkipVerify} //nolint:gosec // opt-in per subscription
		if len(caPEM) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(caPEM) {
				return nil, errors.New("the CA bundle holds no PEM certificate")
			}
			cfg.RootCAs = pool
		}
		t.TLSClientConfig = cfg
	}
	cl := &http.Client{Transport: t}
	c.clients[key] = cl
	return cl, nil
}
