package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
)

// DefaultNATSSubject is the subject template of a NATS sink that names none.
const DefaultNATSSubject = "k8s.{namespace}.{resource}.{name}.{type}"

// DefaultNATSName names the operator's NATS connections to the servers.
const DefaultNATSName = "dynamic-notifier"

// NATSConfig is a NATS JetStream sink.
type NATSConfig struct {
	// Servers are the server URLs, such as nats://nats.messaging:4222 or tls://...
	Servers []string
	// Subject is the subject template (see ParseSubject); DefaultNATSSubject when empty.
	// Every subject it gives must be bound to a stream.
	Subject string
	// Structured sends each event as application/cloudevents+json in the payload instead
	// of binary mode (ce- headers, the data as the payload).
	Structured bool
	// TLS, when set, requires TLS (see Brokers.TLSConfig).
	TLS *tls.Config
	// Credentials authenticate the connection; the zero value connects anonymously.
	Credentials NATSCredentials
	// Name names the connection to the servers; DefaultNATSName when empty.
	Name string
}

// NATSCredentials are how a NATS connection authenticates: at most one of a token, a
// user and password, or an NKey seed.
type NATSCredentials struct {
	Token              string
	Username, Password string
	// NKeySeed is a user NKey seed ("SU..."): the connection signs the server's nonce.
	NKeySeed string
}

// NATS publishes CloudEvents to NATS JetStream by the CloudEvents NATS protocol binding:
// binary content mode by default (every attribute, datacontenttype included, in a
// percent-encoded ce- header; the data as the payload), structured on request (the JSON
// event format, Content-Type application/cloudevents+json). Every publish waits for the
// stream's acknowledgement and carries the event id as Nats-Msg-Id, so the stream's
// duplicate window drops a redelivery.
type NATS struct {
	subject    *SubjectTemplate
	structured bool
	conn       *natsConn
	release    func()
}

// NewNATS returns a NATS sink with a connection of its own, refusing DefaultDeny; Close
// it. Use Brokers.NATS to share connections.
func NewNATS(cfg NATSConfig) (*NATS, error) {
	return NewBrokers(ClientOptions{}).NATS(cfg)
}

// NATS returns a NATS sink, sharing the connection of sinks with the same servers, TLS
// setting, credentials and name. It connects before it returns (up to 5s a server);
// servers that cannot be reached are not an error: the connection keeps trying, and
// publishes fail as retryable until it succeeds. Close the sink when it is no longer used.
func (b *Brokers) NATS(cfg NATSConfig) (*NATS, error) {
	if len(cfg.Servers) == 0 {
		return nil, errNoNATSServer
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultNATSSubject
	}
	subject, err := ParseSubject(cfg.Subject)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = DefaultNATSName
	}
	auth, err := natsAuth(cfg.Credentials)
	if err != nil {
		return nil, err
	}
	c := cfg.Credentials
	key := configKey("nats", cfg.Servers, cfg.TLS, cfg.Name, c.Token, c.Username, c.Password, c.NKeySeed)
	conn, release, err := b.nats.get(key, func() (*natsConn, error) {
		return connectNATS(cfg, auth, b.dialer())
	})
	if err != nil {
		return nil, err
	}
	return &NATS{subject: subject, structured: cfg.Structured, conn: conn, release: release}, nil
}

var errNoNATSServer = errors.New("a NATS sink needs at least one server URL")

// Validate checks what Brokers.NATS checks before it connects: the servers, the subject
// template and the credentials. An error is the sink's author's to fix.
func (cfg NATSConfig) Validate() error {
	if len(cfg.Servers) == 0 {
		return errNoNATSServer
	}
	if cfg.Subject != "" {
		if _, err := ParseSubject(cfg.Subject); err != nil {
			return err
		}
	}
	_, err := natsAuth(cfg.Credentials)
	return err
}

func natsAuth(c NATSCredentials) (nats.Option, error) {
	set := 0
	for _, s := range []string{c.Token, c.Username + c.Password, c.NKeySeed} {
		if s != "" {
			set++
		}
	}
	switch {
	case set > 1:
		return nil, errors.New("NATS credentials: give a token, a username and password, or an NKey seed, not several")
	case c.Token != "":
		return nats.Token(c.Token), nil
	case c.Username != "" || c.Password != "":
		if c.Username == "" {
			return nil, errors.New("NATS credentials: a password needs a username")
		}
		return nats.UserInfo(c.Username, c.Password), nil
	case c.NKeySeed != "":
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(c.NKeySeed)))
		if err != nil {
			return nil, fmt.Errorf("NATS credentials: the NKey seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("NATS credentials: the NKey seed: %w", err)
		}
		if !nkeys.IsValidPublicUserKey(pub) {
			return nil, errors.New("NATS credentials: the NKey seed is not a user seed (SU...)")
		}
		return nats.Nkey(pub, kp.Sign), nil
	}
	return nil, nil
}

// natsConn is one NATS connection, shared by the sinks of one connection setting.
type natsConn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	servers string
	dial    *dialer
	// lastErr is the latest failure to connect (dial, TLS, login), nil once connected: the
	// connection's own LastError is cleared at each reconnect attempt.
	lastErr atomic.Pointer[error]
	// known is closed once the first attempt to connect has failed or succeeded.
	known     chan struct{}
	knownOnce sync.Once

	mu       sync.Mutex
	inflight map[*natsPublish]struct{}
}

// natsPublish is a publish waiting for its acknowledgement: a permission violation the
// server reports for its subject ends it at once.
type natsPublish struct {
	subject string
	cancel  context.CancelCauseFunc
}

func connectNATS(cfg NATSConfig, auth nats.Option, d *dialer) (*natsConn, error) {
	c := &natsConn{servers: strings.Join(cfg.Servers, ","), dial: d, inflight: map[*natsPublish]struct{}{},
		known: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.SetCustomDialer(c),
		// Keep trying, whatever the servers answered: a server down, or credentials it
		// refuses today, may be fixed without the sink being rebuilt.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.IgnoreAuthErrorAbort(),
		// Nothing is buffered while disconnected: a publish fails at once and delivery
		// retries it with backoff, instead of waiting out its timeout.
		nats.ReconnectBufSize(-1),
		nats.ErrorHandler(c.asyncError),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.failed(err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { c.failed(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { c.lastErr.Store(nil) }),
	}
	if auth != nil {
		opts = append(opts, auth)
	}
	if cfg.TLS != nil {
		opts = append(opts, nats.Secure(cfg.TLS))
	}
	nc, err := nats.Connect(strings.Join(cfg.Servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS connection to %s: %w", c.servers, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS JetStream: %w", err)
	}
	c.nc, c.js = nc, js
	if nc.IsConnected() {
		c.lastErr.Store(nil) // a server before the one that answered may have failed
	} else {
		// The first failure is reported asynchronously, at once: wait for it, so that the
		// sink's first publishes say why they fail.
		select {
		case <-c.known:
		case <-time.After(time.Second):
		}
	}
	return c, nil
}

// failed records a failure to connect.
func (c *natsConn) failed(err error) {
	if err == nil {
		return
	}
	if errors.Is(err, nats.ErrNoServers) && c.lastErr.Load() != nil {
		return // the dial failure recorded says more
	}
	c.lastErr.Store(&err)
	c.knownOnce.Do(func() { close(c.known) })
}

// Dial implements nats.CustomDialer: the deny list applies, and a failure is kept to
// explain later publishes.
func (c *natsConn) Dial(network, address string) (net.Conn, error) {
	conn, err := c.dial.Dial(network, address)
	c.failed(err)
	return conn, err
}

var permissionRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// asyncError hears the errors the server reports outside any request. A permission
// violation for a publish never answers the publish: it would wait out its timeout and be
// retried, though a retry fails the same way. It is ended with the violation instead;
// one for a subscription (the reply inbox) ends every publish waiting.
func (c *natsConn) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	m := permissionRe.FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.inflight {
		if strings.EqualFold(m[1], "subscription") || p.subject == m[2] {
			p.cancel(err)
		}
	}
}

func (c *natsConn) track(p *natsPublish) {
	c.mu.Lock()
	c.inflight[p] = struct{}{}
	c.mu.Unlock()
}

func (c *natsConn) untrack(p *natsPublish) {
	c.mu.Lock()
	delete(c.inflight, p)
	c.mu.Unlock()
}

func (c *natsConn) close() { c.nc.Close() }

// notConnected explains why the connection is down: the last failure to connect, and
// what the connection says.
func (c *natsConn) notConnected() error {
	err := fmt.Errorf("not connected to %s (%s)", c.servers, strings.ToLower(c.nc.Status().String()))
	var causes []error
	if p := c.lastErr.Load(); p != nil {
		causes = append(causes, *p)
	}
	if last := c.nc.LastError(); last != nil && (len(causes) == 0 || last.Error() != causes[0].Error()) {
		causes = append(causes, last)
	}
	switch len(causes) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w: %w", err, causes[0])
	}
	return fmt.Errorf("%w: %w; %w", err, causes[0], causes[1])
}

// Close gives the sink's connection back: it closes when no sink uses it. Close the sink
// only once no delivery uses it. Calling Close again does nothing.
func (n *NATS) Close() error {
	n.release()
	return nil
}

// Send publishes msg and waits for the stream's acknowledgement. A message the stream
// already has (the same id within its duplicate window) counts as delivered.
func (n *NATS) Send(ctx context.Context, msg Message) error {
	subject := n.subject.Render(msg)
	m, err := n.message(subject, msg)
	if err != nil {
		return Unencodable(msg.Event, err)
	}
	c := n.conn
	if !c.nc.IsConnected() {
		return natsFailure(subject, c.notConnected(), true)
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &natsPublish{subject: subject, cancel: cancel}
	c.track(p)
	defer c.untrack(p)
	_, err = c.js.PublishMsg(pctx, m)
	if err == nil {
		return nil
	}
	if cause := context.Cause(pctx); errors.Is(cause, nats.ErrPermissionViolation) {
		err = cause
	}
	connected := c.nc.IsConnected()
	if !connected {
		err = fmt.Errorf("%w; %w", err, c.notConnected())
	}
	return natsFailure(subject, err, !connected)
}

// message is msg as a NATS message on subject.
func (n *NATS) message(subject string, msg Message) (*nats.Msg, error) {
	return NATSMessage(subject, n.structured, msg)
}

// NATSMessage is msg as a NATS sink publishes it on subject (SubjectTemplate.Render), in
// structured or binary mode.
func NATSMessage(subject string, structured bool, msg Message) (*nats.Msg, error) {
	ev := msg.Event
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	// JetStream's duplicate window drops a message whose id it has seen.
	m.Header[jetstream.MsgIDHeader] = []string{validUTF8(ev.ID())}
	if structured {
		body, err := structuredBody(msg)
		if err != nil {
			return nil, err
		}
		m.Data = body
		m.Header["Content-Type"] = []string{StructuredContentType}
		return m, nil
	}
	data, err := messageData(msg)
	if err != nil {
		return nil, err
	}
	m.Data = data
	h := m.Header
	h["ce-specversion"] = []string{"1.0"}
	h["ce-id"] = []string{percentEncode(ev.ID())}
	h["ce-source"] = []string{percentEncode(msg.Source)}
	h["ce-type"] = []string{CloudEventType(ev.Type)}
	h["ce-subject"] = []string{percentEncode(ev.ObjectPath())}
	h["ce-time"] = []string{ev.Time()}
	h["ce-datacontenttype"] = []string{payload.JSON}
	for k, v := range msg.Extensions {
		h["ce-"+k] = []string{percentEncode(v)}
	}
	return m, nil
}

// natsFailure sorts a failed publish; down tells that the connection was lost meanwhile.
func natsFailure(subject string, err error, down bool) error {
	berr := &BrokerError{Broker: "nats", Target: "subject " + subject, Err: err}
	berr.Reason, berr.Retry, berr.TooLarge = classifyNATS(err)
	if down && berr.Reason == ReasonTimeout {
		berr.Reason = ReasonConnection
	}
	return berr
}

// classifyNATS sorts a publish error: what JetStream answered, what the server reported,
// or a connection failure.
func classifyNATS(err error) (reason string, retry, tooLarge bool) {
	if apiErr, ok := errors.AsType[*jetstream.APIError](err); ok {
		switch c := apiErr.Code; {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return ReasonInvalid, false, true
		case c == 429:
			return ReasonThrottled, true, false
		case c == 408:
			return ReasonTimeout, true, false
		case c >= 500:
			// A stream over its limits, no leader...: the servers' trouble, which passes.
			return ReasonServerError, true, false
		case c == 401 || c == 403:
			return ReasonDenied, false, false
		}
		return ReasonClientError, false, false
	}
	switch {
	case errors.Is(err, ErrDeniedAddress), errors.Is(err, nats.ErrPermissionViolation),
		errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return ReasonDenied, false, false
	case errors.Is(err, nats.ErrMaxPayload):
		return ReasonInvalid, false, true
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrInvalidMsg), errors.Is(err, nats.ErrBadHeaderMsg):
		return ReasonInvalid, false, false
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		// No stream takes the subject (yet): like an HTTP 404, but someone may create it.
		return ReasonClientError, true, false
	case errors.Is(err, jetstream.ErrInvalidJSAck):
		// Something that is not a stream answered on the subject.
		return ReasonClientError, false, false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return ReasonTimeout, true, false
	}
	if nerr, ok := errors.AsType[net.Error](err); ok && nerr.Timeout() {
		return ReasonTimeout, true, false
	}
	return ReasonConnection, true, false
}

// SubjectTemplate makes a NATS subject from an event. A template is a subject whose tokens
// may hold placeholders in braces:
//
//	{namespace}  the object's namespace; "_" for a cluster-scoped object
//	{name}       the object's name; "_" for a Resync, which names no object
//	{resource}   the resource, plural, such as deployments
//	{group}      the API group, such as apps; "core" for the core group
//	{version}    the API version, such as v1
//	{kind}       the object's kind, such as Deployment; "_" when the object has none
//	{type}       the change: added, updated, deleted or resync
//
// for example k8s.{namespace}.{resource}.{name}.{type}. A value never adds tokens or
// wildcards: '.', '*', '>', white space and control characters in it become '_', and an
// empty value becomes "_". A template may not hold wildcards, white space or empty tokens,
// nor start with '$' or _INBOX (the servers' own subjects).
type SubjectTemplate struct {
	parts []subjectPart
}

type subjectPart struct {
	literal string
	value   func(Message) string // nil for a literal
}

var subjectPlaceholders = map[string]func(Message) string{
	"namespace": func(m Message) string {
		if m.Event.Type == event.Resync {
			ns, _ := m.Event.Object.Object["namespace"].(string)
			return ns
		}
		return m.Event.Object.GetNamespace()
	},
	"name": func(m Message) string {
		if m.Event.Type == event.Resync {
			return ""
		}
		return m.Event.Object.GetName()
	},
	"resource": func(m Message) string { return m.Event.Resource.Resource },
	"group": func(m Message) string {
		if m.Event.Resource.Group == "" {
			return "core"
		}
		return m.Event.Resource.Group
	},
	"version": func(m Message) string { return m.Event.Resource.Version },
	"kind": func(m Message) string {
		if m.Event.Type == event.Resync {
			return ""
		}
		return m.Event.Object.GetKind()
	},
	"type": func(m Message) string { return strings.ToLower(string(m.Event.Type)) },
}

// ParseSubject reads a subject template.
func ParseSubject(tmpl string) (*SubjectTemplate, error) {
	t := &SubjectTemplate{}
	sample := make([]byte, 0, len(tmpl))
	for rest := tmpl; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, subjectPart{literal: rest})
			sample = append(sample, rest...)
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("subject template %q: '}' without '{'", tmpl)
		}
		if open > 0 {
			t.parts = append(t.parts, subjectPart{literal: rest[:open]})
			sample = append(sample, rest[:open]...)
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] != '}' {
			return nil, fmt.Errorf("subject template %q: '{' without '}'", tmpl)
		}
		name := rest[open+1 : open+1+end]
		value, ok := subjectPlaceholders[name]
		if !ok {
			return nil, fmt.Errorf("subject template %q: unknown placeholder {%s}; known: {namespace}, {name}, {resource}, {group}, {version}, {kind}, {type}", tmpl, name)
		}
		t.parts = append(t.parts, subjectPart{value: value})
		sample = append(sample, 'x')
		rest = rest[open+1+end+1:]
	}
	// Values are never empty and never hold separators or wildcards, so a template that
	// makes a valid subject with any one value makes one with every value.
	if err := validSubject(string(sample)); err != nil {
		return nil, fmt.Errorf("subject template %q: %w", tmpl, err)
	}
	return t, nil
}

func validSubject(s string) error {
	tokens := strings.Split(s, ".")
	if tokens[0] == "_INBOX" || strings.HasPrefix(tokens[0], "$") {
		return errors.New("subjects starting with $ or _INBOX belong to the servers and clients")
	}
	for _, tok := range tokens {
		if tok == "" {
			return errors.New("empty token: a subject may not start or end with '.' or hold '..'")
		}
		for _, r := range tok {
			if r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
				return fmt.Errorf("token %q: no wildcards, white space or control characters", tok)
			}
		}
	}
	return nil
}

// Render is the subject of msg.
func (t *SubjectTemplate) Render(msg Message) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.value == nil {
			b.WriteString(p.literal)
			continue
		}
		writeSubjectValue(&b, p.value(msg))
	}
	return b.String()
}

// writeSubjectValue writes v as the whole or part of one token.
func writeSubjectValue(b *strings.Builder, v string) {
	if v == "" {
		b.WriteByte('_')
		return
	}
	for _, r := range v {
		if r == '.' || r == '*' || r == '>' || r == utf8RuneError || unicode.IsSpace(r) || unicode.IsControl(r) {
			r = '_'
		}
		b.WriteRune(r)
	}
}

const utf8RuneError = '\uFFFD'

// natsConns is for tests: how many NATS connections b holds.
func (b *Brokers) natsConns() int { return b.nats.len() }

var _ Sink = (*NATS)(nil)
