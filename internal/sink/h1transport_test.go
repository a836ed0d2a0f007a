package sink

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// connCounting is an HTTP sink that counts the connections it accepted and tells when
// one closed.
func connCounting(t *testing.T, handler http.HandlerFunc) (srv *httptest.Server, opened *atomic.Int32, closed chan struct{}) {
	t.Helper()
	opened = &atomic.Int32{}
	closed = make(chan struct{}, 100)
	srv = httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, opened, closed
}

func webhookTo(t *testing.T, sinkURL string) *Webhook {
	t.Helper()
	cl, err := NewClients(ClientOptions{}).For(TLSMaterial{})
	if err != nil {
		t.Fatal(err)
	}
	return &Webhook{URL: sinkURL, Client: cl}
}

func accept(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusAccepted)
}

func TestSinkConnectionsAreKeptAlive(t *testing.T) {
	g := NewWithT(t)
	srv, opened, _ := connCounting(t, accept)
	w := webhookTo(t, srv.URL)
	for range 20 {
		g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	}
	g.Expect(opened.Load()).To(BeEquivalentTo(1), "connections opened for 20 requests in a row")

	// A chunked answer read to its end leaves the connection usable too.
	chunked, opened, _ := connCounting(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		for range 3 {
			_, _ = w.Write([]byte("part"))
			w.(http.Flusher).Flush()
		}
	})
	w = webhookTo(t, chunked.URL)
	for range 5 {
		g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	}
	g.Expect(opened.Load()).To(BeEquivalentTo(1), "connections opened for 5 chunked answers")
}

// A sink that closes kept-alive connections while they are idle (a short idle timeout, a
// load balancer) costs no failed delivery: the request goes again on a new connection.
func TestAConnectionTheSinkClosedWhileIdleIsReplaced(t *testing.T) {
	g := NewWithT(t)
	var requests atomic.Int32
	srv, opened, closed := connCounting(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		accept(w, r)
	})
	w := webhookTo(t, srv.URL)
	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	srv.CloseClientConnections() // the server's side of the idle connection
	g.Eventually(closed).Should(Receive(), "the server closed the idle connection")

	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(opened.Load()).To(BeEquivalentTo(2))
	g.Expect(requests.Load()).To(BeEquivalentTo(2), "each delivery reached the sink once")
}

func TestAConnectionIsNotKeptWhenItCannotBeReused(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"the sink says Connection: close": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			accept(w, r)
		},
		"the answer is longer than what is read of it": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(make([]byte, 256<<10))
		},
	}
	for name, handler := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			srv, opened, _ := connCounting(t, handler)
			w := webhookTo(t, srv.URL)
			for range 3 {
				g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
			}
			g.Expect(opened.Load()).To(BeEquivalentTo(3))
		})
	}
}

// rawSink answers every request on a connection with reply, as bytes on the wire: for the
// answers net/http's server would not give.
func rawSink(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close() // kept alive by the client's pool
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() {
				defer func() { _ = conn.Close() }()
				br := bufio.NewReader(conn)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(conn, reply); err != nil {
						return
					}
				}
			})
		}
	})
	return "http://" + ln.Addr().String() + "/events"
}

func TestInterimAnswersAreSkipped(t *testing.T) {
	sinkURL := rawSink(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+
		"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
	w := webhookTo(t, sinkURL)
	for range 2 {
		NewWithT(t).Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	}
}

func TestResponseHeadersAreBounded(t *testing.T) {
	sinkURL := rawSink(t, "HTTP/1.1 202 Accepted\r\nX-Big: "+strings.Repeat("a", MaxResponseHeaderBytes)+
		"\r\nContent-Length: 0\r\n\r\n")
	err := webhookTo(t, sinkURL).Send(t.Context(), testMessage())
	NewWithT(t).Expect(err).To(MatchError(ContainSubstring("response headers exceed")))
}

// A header value from a Secret cannot end the header and write a request of its own.
func TestHeaderValuesCannotSplitTheRequest(t *testing.T) {
	g := NewWithT(t)
	srv, opened, _ := connCounting(t, accept)
	w := webhookTo(t, srv.URL)
	w.Header = http.Header{"X-Token": {"a\r\n\r\nPOST /other HTTP/1.1"}}
	g.Expect(w.Send(t.Context(), testMessage())).To(MatchError(ContainSubstring(`invalid header field value for "X-Token"`)))
	w.Header = http.Header{"X-Bad\r\nName": {"v"}}
	g.Expect(w.Send(t.Context(), testMessage())).To(MatchError(ContainSubstring("invalid header field name")))
	g.Expect(opened.Load()).To(BeEquivalentTo(0), "nothing was sent")
}

// Stopping a pipeline cancels its request: the call returns at once and the connection,
// in an unknown state, is not used again.
func TestACancelledRequestEndsAtOnce(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	var requests atomic.Int32
	srv, opened, _ := connCounting(t, func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 {
			<-release
		}
		accept(w, r)
	})
	t.Cleanup(func() { close(release) })
	w := webhookTo(t, srv.URL)
	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Send(ctx, testMessage()) }()
	g.Eventually(requests.Load).Should(BeEquivalentTo(2), "the second request reached the sink")
	cancel()
	var err error
	g.Eventually(done).Should(Receive(&err))
	g.Expect(errors.Is(err, context.Canceled)).To(BeTrue(), "error %v", err)

	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(opened.Load()).To(BeEquivalentTo(2), "the cancelled request's connection was not used again")
}

// The request's deadline bounds the whole exchange, with the context's error.
func TestARequestPastItsDeadline(t *testing.T) {
	release := make(chan struct{})
	srv, _, _ := connCounting(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		accept(w, r)
	})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := webhookTo(t, srv.URL).Send(ctx, testMessage())
	NewWithT(t).Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "error %v", err)
}

// A kept-alive connection carries no deadline of an earlier request into a later one.
func TestAReusedConnectionKeepsNoEarlierDeadline(t *testing.T) {
	g := NewWithT(t)
	srv, opened, _ := connCounting(t, accept)
	w := webhookTo(t, srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	g.Expect(w.Send(ctx, testMessage())).To(Succeed())
	<-ctx.Done() // the first request's deadline has passed

	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed(), "a request without a deadline")
	later, cancelLater := context.WithTimeout(t.Context(), time.Minute)
	defer cancelLater()
	g.Expect(w.Send(later, testMessage())).To(Succeed(), "a request with a later deadline")
	g.Expect(opened.Load()).To(BeEquivalentTo(1), "all three went over the same connection")
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct{ scheme, host, want string }{
		{"http", "sink.example", "sink.example:80"},
		{"https", "sink.example", "sink.example:443"},
		{"http", "sink.example:8080", "sink.example:8080"},
		{"https", "[::1]", "[::1]:443"},
		{"http", "[::1]:9", "[::1]:9"},
	} {
		if got := hostPort(&url.URL{Scheme: tc.scheme, Host: tc.host}); got != tc.want {
			t.Errorf("hostPort(%s://%s) = %s, want %s", tc.scheme, tc.host, got, tc.want)
		}
	}
}

// A URL's user info is sent as basic authentication, as http.Client sends it, unless the
// sink's headers carry their own Authorization.
func TestURLUserInfoIsBasicAuth(t *testing.T) {
	g := NewWithT(t)
	got := make(chan string, 2)
	srv, _, _ := connCounting(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		accept(w, r)
	})
	w := webhookTo(t, strings.Replace(srv.URL, "http://", "http://hook:s3cret@", 1))
	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(got).To(Receive(Equal("Basic aG9vazpzM2NyZXQ=")))
	w.Header = http.Header{"Authorization": {"Bearer t"}}
	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(got).To(Receive(Equal("Bearer t")))
}

// An IPv6 literal in the URL is dialled and named in the Host header as the URL gives it.
func TestSinkOnIPv6Loopback(t *testing.T) {
	g := NewWithT(t)
	ln, err := net.Listen("tcp", "[::1]:0")
	g.Expect(err).NotTo(HaveOccurred())
	hosts := make(chan string, 1)
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		accept(w, r)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	sinkURL := "http://" + ln.Addr().String() + "/events"
	g.Expect(webhookTo(t, sinkURL).Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(hosts).To(Receive(Equal(ln.Addr().String())))
}

// A sink may answer before it has read the whole request and close the connection, as one
// does over its size limit: the answer counts (a 413 splits a batch), not the broken pipe.
func TestAnAnswerBeforeTheWholeRequestCounts(t *testing.T) {
	g := NewWithT(t)
	srv, opened, _ := connCounting(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})
	w := webhookTo(t, srv.URL)
	msg := testMessage()
	msg.Data = []byte(`"` + strings.Repeat("x", 8<<20) + `"`)
	for range 3 {
		err := w.Send(t.Context(), msg)
		g.Expect(TooLarge(err)).To(BeTrue(), "error %v", err)
	}
	g.Expect(opened.Load()).To(BeEquivalentTo(3), "a connection the sink stopped reading is not used again")
}
