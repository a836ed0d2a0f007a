package sink

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// BrokerError is a failed publish to a message broker (Kafka, NATS JetStream), sorted when
// it happened: whether a retry may succeed and the FailureReason it counts under.
type BrokerError struct {
	// Broker is "kafka" or "nats".
	Broker string
	// Target is where the message went: the topic or the subject.
	Target string
	// Reason is one of the Reason values.
	Reason string
	// Retry tells whether the same message may go through when tried again.
	Retry bool
	// TooLarge tells that the broker refused the request for its size: a batch split in
	// smaller ones may pass.
	TooLarge bool
	Err      error
}

func (e *BrokerError) Error() string {
	return e.Broker + " " + e.Target + ": " + e.Err.Error()
}

func (e *BrokerError) Unwrap() error { return e.Err }

// Brokers hands out broker sinks and shares their connections: sinks whose connection
// settings are the same (servers, credentials, TLS, client name) use one client, opened
// for the first and closed when the last is closed. Every connection, to a configured
// address or to one a cluster advertises, refuses the operator's denied ranges. Safe for
// concurrent use.
type Brokers struct {
	deny  denyList
	kafka refs[*kafkaClient]
	nats  refs[*natsConn]

	tlsMu  sync.Mutex
	tlsCfg map[[32]byte]*tls.Config
}

// NewBrokers returns an empty broker client cache; only opts.Deny applies to brokers (no
// proxies, no redirects).
func NewBrokers(opts ClientOptions) *Brokers {
	deny := opts.Deny
	if deny == nil {
		deny = DefaultDeny
	}
	return &Brokers{deny: newDenyList(deny), tlsCfg: map[[32]byte]*tls.Config{}}
}

// TLSConfig is the client TLS setting for a CA bundle (PEM, may be empty: the system
// roots) and verification setting, one *tls.Config per distinct pair. Broker clients are
// shared per *tls.Config, so sinks built from the same Secret should pass what this
// returns rather than build their own.
func (b *Brokers) TLSConfig(caPEM []byte, insecureSkipVerify bool) (*tls.Config, error) {
	h := sha256.New()
	h.Write(caPEM)
	if insecureSkipVerify {
		h.Write([]byte{1})
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	b.tlsMu.Lock()
	defer b.tlsMu.Unlock()
	if cfg, ok := b.tlsCfg[key]; ok {
		return cfg, nil
	}
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
	b.tlsCfg[key] = cfg
	return cfg, nil
}

// dialer connects to a broker: the host is checked before resolution, every address
// dialled after it, as for HTTP sinks.
type dialer struct {
	deny denyList
	d    net.Dialer
}

func (b *Brokers) dialer() *dialer {
	return &dialer{deny: b.deny, d: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: b.deny.checkDial}}
}

func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if err := d.deny.checkHost(host); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return d.d.DialContext(ctx, network, address)
}

// Dial is the nats.CustomDialer form.
func (d *dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// refs is a cache of shared clients, counted by the sinks using them.
type refs[T interface{ close() }] struct {
	mu sync.Mutex
	m  map[[32]byte]*ref[T]
}

type ref[T any] struct {
	ready chan struct{} // closed once v or err is set
	v     T
	err   error
	n     int
}

// get returns the client under key, opening it (outside the lock: a connection may take
// a while) when no sink holds one, and the function that gives it back.
func (r *refs[T]) get(key [32]byte, open func() (T, error)) (T, func(), error) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[[32]byte]*ref[T]{}
	}
	e, found := r.m[key]
	if !found {
		e = &ref[T]{ready: make(chan struct{})}
		r.m[key] = e
	}
	e.n++
	r.mu.Unlock()
	if !found {
		e.v, e.err = open()
		close(e.ready)
	}
	<-e.ready
	if e.err != nil {
		r.put(key, e)
		var zero T
		return zero, nil, e.err
	}
	var once sync.Once
	return e.v, func() { once.Do(func() { r.put(key, e) }) }, nil
}

// put gives back one use of e, closing its client with the last.
func (r *refs[T]) put(key [32]byte, e *ref[T]) {
	r.mu.Lock()
	e.n--
	last := e.n == 0
	if last && r.m[key] == e {
		delete(r.m, key)
	}
	r.mu.Unlock()
	if last && e.err == nil {
		e.v.close()
	}
}

// len is how many clients are open.
func (r *refs[T]) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// configKey hashes the settings a shared client is opened with. parts are written with
// their lengths, so no two lists of parts hash alike.
func configKey(kind string, servers []string, tlsCfg *tls.Config, parts ...string) [32]byte {
	h := sha256.New()
	write := func(s string) {
		_, _ = fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	write(kind)
	sorted := slices.Clone(servers)
	slices.Sort(sorted)
	write(fmt.Sprint(len(sorted)))
	for _, s := range sorted {
		write(s)
	}
	// A *tls.Config holds pools and callbacks that cannot be compared: clients share one
	// only when sinks pass the same pointer (see TLSConfig). The cache entry keeps the
	// config alive, so its address is not reused while the entry exists.
	write(fmt.Sprintf("%p", tlsCfg))
	for _, p := range parts {
		write(p)
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return key
}

// validUTF8 replaces invalid UTF-8 with U+FFFD: header values must be UTF-8 strings.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// percentEncode encodes a header value as the CloudEvents NATS binding requires: space,
// double quote, percent and every byte outside printable ASCII become %XX (upper case),
// other characters stay as they are.
func percentEncode(s string) string {
	s = validUTF8(s)
	n := 0
	for i := 0; i < len(s); i++ {
		if needsPercent(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const upperHex = "0123456789ABCDEF"
	buf := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsPercent(c) {
			buf = append(buf, '%', upperHex[c>>4], upperHex[c&0xf])
			continue
		}
		buf = append(buf, c)
	}
	return string(buf)
}

func needsPercent(c byte) bool {
	return c < 0x21 || c > 0x7e || c == '"' || c == '%'
}
