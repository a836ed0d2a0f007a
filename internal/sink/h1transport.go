package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Transport speaks HTTP/1.1 to sinks: each request and its answer on the caller's
// goroutine, over kept-alive connections pooled per host. net/http's Transport hands every
// request to a writing and a reading goroutine of its connection; at one request per
// delivery those hand-offs cost about as much CPU as the request itself (BENCHMARKS.md,
// "one request per delivery"). Sinks reached through a proxy keep net/http's Transport.
type h1Transport struct {
	dial func(ctx context.Context, network, address string) (net.Conn, error)
	// tlsConfig is the base of https connections; nil trusts the system roots.
	tlsConfig *tls.Config
	// maxIdlePerHost bounds the connections kept for later requests to one host.
	maxIdlePerHost int
	// idleTimeout closes connections unused that long.
	idleTimeout time.Duration

	mu       sync.Mutex
	idle     map[poolKey][]*h1Conn // most recently used last
	sweeping bool
}

const (
	schemeHTTP  = "http"
	schemeHTTPS = "https"
)

// poolKey is where a connection leads: a scheme and an address with its port.
type poolKey struct{ scheme, addr string }

// h1Conn is one connection with its buffers.
type h1Conn struct {
	conn   net.Conn
	limit  *headerLimit
	br     *bufio.Reader
	bw     *bufio.Writer
	key    poolKey
	reused bool
	idleAt time.Time
}

var errResponseHeadersTooLarge = fmt.Errorf("the sink's response headers exceed %d bytes", MaxResponseHeaderBytes)

// headerLimit fails reads past left bytes while a response's status line and headers are
// read; left < 0 means no limit (the body, which the caller bounds itself).
type headerLimit struct {
	r    io.Reader
	left int
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, errResponseHeadersTooLarge
	}
	if l.left > 0 && len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	if l.left > 0 {
		l.left -= n
	}
	return n, err
}

// RoundTrip sends req and reads the answer's head; the body comes as the response's, and
// closing it gives the connection back once the body was read to its end.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer func() { _ = req.Body.Close() }() // a RoundTripper closes the body, even on error
	}
	if req.URL.Scheme != schemeHTTP && req.URL.Scheme != schemeHTTPS {
		return nil, fmt.Errorf("unsupported protocol scheme %q", req.URL.Scheme)
	}
	if err := checkHeader(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	key := poolKey{scheme: req.URL.Scheme, addr: hostPort(req.URL)}
	body := req.Body
	for attempt := 0; ; attempt++ {
		c, err := t.conn(ctx, key, req.URL.Hostname())
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		resp, sent, err := t.exchange(ctx, c, req, body)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the sink closed while it was idle fails before any answer:
		// send once more on a new one.
		if !c.reused || sent || attempt > 0 || ctx.Err() != nil || !staleConn(err) {
			return nil, ctxErr(ctx, err)
		}
		if req.GetBody != nil {
			again, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			defer func() { _ = again.Close() }()
			body = again
		} else if req.Body != nil && req.Body != http.NoBody {
			return nil, err // a body that cannot be read again
		}
	}
}

// exchange writes req on c and reads the head of the answer. sent tells whether any of the
// answer was read: the sink saw the request.
func (t *h1Transport) exchange(ctx context.Context, c *h1Conn, req *http.Request, body io.Reader) (resp *http.Response, sent bool, err error) {
	// A context that ends, at its deadline or cancelled (the pipeline stopping), breaks off
	// what blocks on c. The connection gets no deadline of its own: setting and clearing
	// one cost each request four timer updates for what the context does already.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if err != nil {
			stop()
			_ = c.conn.Close()
		}
	}()
	keep := true
	if werr := writeRequest(c.bw, req, body); werr != nil {
		// A sink may answer before it has read the whole request (413 over its size limit,
		// 401) and close the connection: its answer is what counts, if it came.
		if ctx.Err() != nil || !staleConn(werr) {
			return nil, false, werr
		}
		_ = c.conn.SetReadDeadline(earlyAnswerDeadline(ctx))
		c.limit.left = MaxResponseHeaderBytes
		if resp, err = readAnswer(c, req); err != nil {
			return nil, false, werr
		}
		keep = false
	} else {
		c.limit.left = MaxResponseHeaderBytes
		if _, err := c.br.Peek(1); err != nil {
			return nil, false, err
		}
		if resp, err = readAnswer(c, req); err != nil {
			return nil, true, err
		}
	}
	b := &h1Body{t: t, c: c, body: resp.Body, stop: stop, keep: keep && !resp.Close, done: resp.Body == http.NoBody}
	resp.Body = b
	return resp, true, nil
}

// earlyAnswerWait bounds the wait for an answer after the sink stopped reading the request.
const earlyAnswerWait = time.Second

func earlyAnswerDeadline(ctx context.Context) time.Time {
	at := time.Now().Add(earlyAnswerWait)
	if d, ok := ctx.Deadline(); ok && d.Before(at) {
		return d
	}
	return at
}

// readAnswer reads the head of the final answer on c, past interim ones (100 Continue,
// 103 Early Hints), each bounded by MaxResponseHeaderBytes from where the caller set the
// bound.
func readAnswer(c *h1Conn, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, errors.New("the sink switched protocols")
		}
		if resp.StatusCode >= 200 {
			c.limit.left = -1
			return resp, nil
		}
		c.limit.left = MaxResponseHeaderBytes
	}
}

// staleConn tells errors of a connection the other end closed.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// ctxErr is the context's error when it ended: what broke the I/O off.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// checkHeader refuses header names and values that would end the header early (a CR or LF
// from a Secret's value), as net/http does.
func checkHeader(h http.Header) error {
	for name, values := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("invalid header field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid header field value for %q", name)
			}
		}
	}
	return nil
}

// writeRequest writes req's head and body; its header was checked (checkHeader).
func writeRequest(w *bufio.Writer, req *http.Request, body io.Reader) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	_, _ = w.WriteString(req.Method)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(req.URL.RequestURI())
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = w.WriteString(host)
	_, _ = w.WriteString("\r\n")
	for name, values := range req.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // from the request itself
		}
		for _, v := range values {
			_, _ = w.WriteString(name)
			_, _ = w.WriteString(": ")
			_, _ = w.WriteString(v)
			_, _ = w.WriteString("\r\n")
		}
	}
	if body == nil {
		body = http.NoBody
	}
	if req.ContentLength < 0 {
		return errors.New("a request to a sink needs its length known")
	}
	if req.ContentLength > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut {
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.WriteString(strconv.FormatInt(req.ContentLength, 10))
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("\r\n")
	if n, err := io.Copy(w, body); err != nil {
		return err
	} else if n != req.ContentLength {
		return fmt.Errorf("the request body had %d bytes, not the %d it announced", n, req.ContentLength)
	}
	return w.Flush()
}

// h1Body is an answer's body; closing it gives the connection back to the pool when the
// body was read to its end and the sink keeps the connection open.
type h1Body struct {
	t      *h1Transport
	c      *h1Conn
	body   io.ReadCloser
	stop   func() bool
	keep   bool
	done   bool
	closed bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.done = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	cancelled := !b.stop()
	if b.done && b.keep && !cancelled {
		b.t.put(b.c)
		return nil
	}
	return b.c.conn.Close()
}

// conn takes an idle connection to key, or dials addr.
func (t *h1Transport) conn(ctx context.Context, key poolKey, hostname string) (*h1Conn, error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[key]; len(conns) > 0; conns = t.idle[key] {
		c := conns[len(conns)-1]
		t.idle[key] = conns[:len(conns)-1]
		if now.Sub(c.idleAt) < t.idleTimeout {
			t.mu.Unlock()
			c.reused = true
			return c, nil
		}
		_ = c.conn.Close()
	}
	t.mu.Unlock()

	raw, err := t.dial(ctx, "tcp", key.addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	if key.scheme == schemeHTTPS {
		tc := tls.Client(raw, t.tlsFor(hostname))
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		conn = tc
	}
	limit := &headerLimit{r: conn, left: -1}
	return &h1Conn{conn: conn, limit: limit, br: bufio.NewReader(limit), bw: bufio.NewWriter(conn), key: key}, nil
}

// tlsFor is the TLS configuration for hostname: HTTP/1.1 only, the name checked.
func (t *h1Transport) tlsFor(hostname string) *tls.Config {
	var cfg *tls.Config
	if t.tlsConfig != nil {
		cfg = t.tlsConfig.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = hostname
	}
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// put keeps c for the next request to its host.
func (t *h1Transport) put(c *h1Conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = map[poolKey][]*h1Conn{}
	}
	if len(t.idle[c.key]) >= t.maxIdlePerHost {
		_ = c.conn.Close()
		return
	}
	t.idle[c.key] = append(t.idle[c.key], c)
	if !t.sweeping {
		t.sweeping = true
		time.AfterFunc(t.idleTimeout, t.sweep)
	}
}

// sweep closes connections idle for longer than idleTimeout, and looks again later while
// any are kept.
func (t *h1Transport) sweep() {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, conns := range t.idle {
		kept := conns[:0]
		for _, c := range conns {
			if now.Sub(c.idleAt) < t.idleTimeout {
				kept = append(kept, c)
			} else {
				_ = c.conn.Close()
			}
		}
		clear(conns[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
	if len(t.idle) == 0 {
		t.sweeping = false
		return
	}
	time.AfterFunc(t.idleTimeout, t.sweep)
}

// hostPort is the address the URL names, with its scheme's default port when it names none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), port(u))
}
