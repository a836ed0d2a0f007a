package sink

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClientOptions are the operator-wide rules of sink connections; the zero value is the
// safe default.
type ClientOptions struct {
	// Deny are address ranges sinks may never reach. Nil means DefaultDeny; an empty,
	// non-nil slice denies nothing.
	Deny []netip.Prefix
	// Proxy picks the proxy of a request, as http.Transport.Proxy does. Nil, the default,
	// connects directly: through a proxy, the dial check would see the proxy, not the sink.
	Proxy func(*http.Request) (*url.URL, error)
	// FollowRedirects follows up to 3 redirects that keep the method and stay on the same
	// scheme, host and port, without the request's other headers (credentials from
	// headersFrom, the signature). Off, the default, a redirect fails the delivery: it may
	// lead a sink's requests anywhere its author could not send them directly.
	FollowRedirects bool
}

// maxRedirects is how many redirects one request may follow when they are followed.
const maxRedirects = 3

// MaxResponseHeaderBytes bounds the status line and headers of a sink's answer.
const MaxResponseHeaderBytes = 64 << 10

// Clients hands out HTTP clients: one shared, pooled client per distinct TLS setting, so
// connections are kept alive and reused across subscriptions posting to the same host.
// Every client refuses to connect to addresses in the deny list.
type Clients struct {
	deny    denyList
	proxy   func(*http.Request) (*url.URL, error)
	follow  bool
	mu      sync.Mutex
	clients map[[32]byte]*http.Client
}

// NewClients returns an empty client cache following opts.
func NewClients(opts ClientOptions) *Clients {
	deny := opts.Deny
	if deny == nil {
		deny = DefaultDeny
	}
	return &Clients{deny: newDenyList(deny), proxy: opts.Proxy, follow: opts.FollowRedirects, clients: map[[32]byte]*http.Client{}}
}

// For returns the client for a TLS setting (all empty: the system roots).
// TLSMaterial is what a sink's TLS needs: CAs to trust besides the system's, a client
// certificate and key to present (mutual TLS), or no verification at all.
type TLSMaterial struct {
	CA, Cert, Key      []byte // PEM
	InsecureSkipVerify bool
}

func (c *Clients) For(m TLSMaterial) (*http.Client, error) {
	h := sha256.New()
	for _, part := range [][]byte{m.CA, m.Cert, m.Key} {
		h.Write([]byte(strconv.Itoa(len(part)) + ":"))
		h.Write(part)
	}
	if m.InsecureSkipVerify {
		h.Write([]byte{1})
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[key]; ok {
		return cl, nil
	}
	dial := (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: c.deny.checkDial}).DialContext
	var tlsConfig *tls.Config
	if len(m.CA) > 0 || len(m.Cert) > 0 || m.InsecureSkipVerify {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: m.InsecureSkipVerify} //nolint:gosec // opt-in per subscription
		if len(m.CA) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(m.CA) {
				return nil, errors.New("the CA bundle holds no PEM certificate")
			}
			cfg.RootCAs = pool
		}
		if len(m.Cert) > 0 {
			pair, err := tls.X509KeyPair(m.Cert, m.Key)
			if err != nil {
				return nil, errors.New("the client certificate and key do not form a pair (PEM tls.crt and tls.key)")
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		tlsConfig = cfg
	}
	// Every delivery lane of every subscription on a host may hold a connection; a smaller
	// idle pool makes lanes beyond it dial again for each request.
	const maxIdlePerHost, idleTimeout = 1024, 90 * time.Second
	var next http.RoundTripper = &h1Transport{dial: dial, tlsConfig: tlsConfig, maxIdlePerHost: maxIdlePerHost,
		idleTimeout: idleTimeout}
	if c.proxy != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy, t.DialContext, t.TLSClientConfig = c.proxy, dial, tlsConfig
		t.MaxIdleConns, t.MaxIdleConnsPerHost, t.IdleConnTimeout = 4*maxIdlePerHost, maxIdlePerHost, idleTimeout
		// A sink's answer is a status line and a few headers: a sink sending megabytes of
		// them gets an error, not the operator's memory.
		t.MaxResponseHeaderBytes = MaxResponseHeaderBytes
		next = t
	}
	cl := &http.Client{Transport: &guardedTransport{next: next, dial: dial, proxy: c.proxy, deny: c.deny, follow: c.follow},
		CheckRedirect: c.checkRedirect}
	c.clients[key] = cl
	return cl, nil
}

// guardedTransport checks the host of every request, redirects included, before the
// transport resolves it, dials it or hands it to a proxy.
type guardedTransport struct {
	next http.RoundTripper
	// dial is next's: it checks each address it connects to.
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	proxy func(*http.Request) (*url.URL, error)
	deny  denyList
	// follow is whether the client follows redirects.
	follow bool
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.deny.checkHost(req.URL.Hostname()); err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	return t.next.RoundTrip(req)
}

// send sends req with cl. A client of Clients that follows no redirects needs nothing of
// http.Client but what it does with a URL's user info, so its transport takes req at once,
// with less work per request (followed is false); any other client goes through its
// redirect policy, which leaves only a 3xx it did not try to follow (300, 304, one without
// a Location).
func send(cl *http.Client, req *http.Request) (resp *http.Response, followed bool, err error) {
	if g, ok := cl.Transport.(*guardedTransport); ok && !g.follow {
		if u := req.URL.User; u != nil && req.Header.Get("Authorization") == "" {
			password, _ := u.Password()
			req.SetBasicAuth(u.Username(), password)
		}
		resp, err = g.RoundTrip(req)
		return resp, false, err
	}
	resp, err = cl.Do(req)
	return resp, true, err
}

// checkRedirect decides on a redirect the sink answered; req is the request that would
// follow it, via the requests made so far.
func (c *Clients) checkRedirect(req *http.Request, via []*http.Request) error {
	refuse := func(rule string) error {
		return &RedirectError{Status: req.Response.Status, Location: req.URL.String(), Rule: rule}
	}
	first := via[0]
	switch {
	case !c.follow:
		return refuse("redirects are not followed")
	case len(via) > maxRedirects:
		return refuse("at most 3 redirects are followed")
	case !sameOrigin(first.URL, req.URL):
		return refuse("only redirects to the same host are followed")
	case req.Method != first.Method:
		// 301, 302 and 303 turn a POST into a body-less GET: the event would be lost and
		// counted as delivered.
		return refuse("a redirect that turns the POST into a GET is not followed")
	}
	// The client copied every header; keep only those describing the event.
	for k := range req.Header {
		if k != "Content-Type" && !strings.HasPrefix(k, "Ce-") {
			delete(req.Header, k)
		}
	}
	return nil
}

// sameOrigin compares scheme, host and port, default ports included.
func sameOrigin(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == schemeHTTPS {
		return "443"
	}
	return "80"
}
