package sink

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Clients hands out HTTP clients: one shared, pooled client per distinct TLS setting, so
// connections are kept alive and reused across subscriptions posting to the same host.
// Every client refuses to connect to addresses in the deny list.
type Clients struct {
	deny    []netip.Prefix
	mu      sync.Mutex
	clients map[[32]byte]*http.Client
}

// ErrDeniedAddress is a sink address in a denied range: a policy decision, not retried.
var ErrDeniedAddress = errors.New("address denied by the operator's sink policy")

// DefaultDeny are the ranges sinks may never reach unless the operator is told otherwise:
// link-local, where cloud metadata services live.
var DefaultDeny = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}

// NewClients returns an empty client cache refusing the deny ranges.
func NewClients(deny ...netip.Prefix) *Clients {
	return &Clients{deny: deny, clients: map[[32]byte]*http.Client{}}
}

// checkDial runs after DNS resolution, on the address actually dialled, so DNS rebinding
// or a redirect cannot reach a denied range.
func (c *Clients) checkDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read %q", ErrDeniedAddress, address)
	}
	ip := ap.Addr().Unmap()
	for _, p := range c.deny {
		if p.Contains(ip) {
			return fmt.Errorf("%s is in %s: %w", ip, p, ErrDeniedAddress)
		}
	}
	return nil
}

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
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: c.checkDial}).DialContext
	// Every delivery lane of every subscription on a host may hold a connection; a smaller
	// idle pool makes lanes beyond it dial again for each request.
	t.MaxIdleConns = 4096
	t.MaxIdleConnsPerHost = 1024
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
	cl := &http.Client{Transport: t, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 3 {
			return errors.New("stopped after 3 redirects")
		}
		return nil
	}}
	c.clients[key] = cl
	return cl, nil
}
