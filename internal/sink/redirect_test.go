package sink

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
)

// hop is one request a redirect test server saw.
type hop struct {
	method, path string
	header       http.Header
	body         string
}

// redirectServer answers /N with a redirect of status to /N+1 (or to next(N), when set)
// until /last, which answers 204. It records every request.
type redirectServer struct {
	*httptest.Server
	status int
	last   int
	next   func(n int) string
	mu     sync.Mutex
	hops   []hop
}

func newRedirectServer(t *testing.T, status, last int) *redirectServer {
	t.Helper()
	s := &redirectServer{status: status, last: last}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hops = append(s.hops, hop{r.Method, r.URL.Path, r.Header.Clone(), string(body)})
		s.mu.Unlock()
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if n >= s.last {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		to := "/" + strconv.Itoa(n+1)
		if s.next != nil {
			to = s.next(n)
		}
		w.Header().Set("Location", to)
		w.WriteHeader(s.status)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *redirectServer) seen() []hop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hops)
}

func signedWebhook(t *testing.T, url string, opts ClientOptions) *Webhook {
	t.Helper()
	cl, err := NewClients(opts).For(TLSMaterial{})
	if err != nil {
		t.Fatal(err)
	}
	return &Webhook{URL: url, Client: cl, Header: http.Header{"Authorization": {"Bearer s3cret"}},
		SigningKey: []byte("signing-key")}
}

func TestRedirectsAreNotFollowedByDefault(t *testing.T) {
	g := NewWithT(t)
	srv := newRedirectServer(t, http.StatusTemporaryRedirect, 1)
	w := signedWebhook(t, srv.URL+"/0", ClientOptions{})

	err := w.Send(t.Context(), testMessage())

	g.Expect(err).To(MatchError("POST " + srv.URL + "/0: the sink answered 307 Temporary Redirect, a redirect to " +
		srv.URL + "/1: redirects are not followed"))
	_, ok := errors.AsType[*RedirectError](err)
	g.Expect(ok).To(BeTrue())
	g.Expect(Retryable(err)).To(BeFalse(), "the sink will answer the same again")
	g.Expect(FailureReason(err)).To(Equal(ReasonRedirect))
	g.Expect(FailureReasons).To(ContainElement(ReasonRedirect), "a metric label")
	g.Expect(srv.seen()).To(HaveLen(1))
}

func TestFollowedRedirectsStayOnTheHostAndDropCredentials(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			g := NewWithT(t)
			srv := newRedirectServer(t, status, 3)
			w := signedWebhook(t, srv.URL+"/0", ClientOptions{FollowRedirects: true})

			g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())

			hops := srv.seen()
			g.Expect(hops).To(HaveLen(4), "three redirects are followed")
			first := hops[0]
			g.Expect(first.header.Get("Authorization")).To(Equal("Bearer s3cret"))
			for _, h := range hops[1:] {
				g.Expect(h.method).To(Equal(http.MethodPost))
				g.Expect(h.body).To(Equal(first.body), "the body is sent again")
				g.Expect(h.header.Get("Content-Type")).To(Equal(first.header.Get("Content-Type")))
				// Only what describes the event goes on: no headersFrom value, no signature.
				for k := range h.header {
					if k != "Content-Type" && !strings.HasPrefix(k, "Ce-") && k != "Content-Length" &&
						k != "User-Agent" && k != "Accept-Encoding" {
						t.Errorf("%s: header %s sent on a redirect", h.path, k)
					}
				}
				for k := range first.header {
					if strings.HasPrefix(k, "Ce-") {
						g.Expect(h.header.Get(k)).To(Equal(first.header.Get(k)))
					}
				}
			}
		})
	}
}

func TestFollowedRedirectsRefused(t *testing.T) {
	other := newRedirectServer(t, http.StatusTemporaryRedirect, 0)
	cases := []struct {
		name   string
		status int
		last   int
		next   func(n int) string
		want   string
		hops   int
	}{
		{name: "a fourth", status: http.StatusTemporaryRedirect, last: 4, hops: 4,
			want: "307 Temporary Redirect, a redirect to %s/4: at most 3 redirects are followed"},
		{name: "another port", status: http.StatusTemporaryRedirect, last: 4, hops: 1,
			next: func(int) string { return other.URL + "/x" },
			want: "307 Temporary Redirect, a redirect to " + other.URL + "/x: only redirects to the same host are followed"},
		// Same address and port, but named otherwise: another host to HTTP and TLS.
		{name: "another host name", status: http.StatusPermanentRedirect, last: 4, hops: 1,
			next: func(int) string { return "http://localhost:%p/x" },
			want: "308 Permanent Redirect, a redirect to http://localhost:%p/x: only redirects to the same host are followed"},
		{name: "302", status: http.StatusFound, last: 4, hops: 1,
			want: "302 Found, a redirect to %s/1: a redirect that turns the POST into a GET is not followed"},
		{name: "303", status: http.StatusSeeOther, last: 4, hops: 1,
			want: "303 See Other, a redirect to %s/1: a redirect that turns the POST into a GET is not followed"},
		{name: "301", status: http.StatusMovedPermanently, last: 4, hops: 1,
			want: "301 Moved Permanently, a redirect to %s/1: a redirect that turns the POST into a GET is not followed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			srv := newRedirectServer(t, tc.status, tc.last)
			port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
			if tc.next != nil {
				srv.next = func(n int) string { return strings.ReplaceAll(tc.next(n), "%p", port) }
			}
			w := signedWebhook(t, srv.URL+"/0", ClientOptions{FollowRedirects: true})

			err := w.Send(t.Context(), testMessage())

			want := strings.ReplaceAll(strings.ReplaceAll(tc.want, "%s", srv.URL), "%p", port)
			g.Expect(err).To(MatchError("POST " + srv.URL + "/0: the sink answered " + want))
			g.Expect(FailureReason(err)).To(Equal(ReasonRedirect))
			g.Expect(Retryable(err)).To(BeFalse())
			g.Expect(srv.seen()).To(HaveLen(tc.hops))
			g.Expect(other.seen()).To(BeEmpty())
		})
	}
}

// A 3xx the client does not follow at all (no Location, or a status without one to follow)
// still fails as a redirect, not as a success or a client error.
func TestUnfollowableRedirectStatus(t *testing.T) {
	g := NewWithT(t)
	srv, _ := recordingServer(t, http.StatusNotModified, nil)
	w := signedWebhook(t, srv.URL, ClientOptions{FollowRedirects: true})
	err := w.Send(t.Context(), testMessage())
	g.Expect(err).To(MatchError("POST " + srv.URL + ": the sink answered 304 Not Modified, a redirect without a Location"))
	g.Expect(FailureReason(err)).To(Equal(ReasonRedirect))
	g.Expect(Retryable(err)).To(BeFalse())
}
