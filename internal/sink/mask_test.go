package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
)

func TestMaskURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://user:pass@host/x", "https://user:***@host/x"},
		{"https://user:pass@host/x?token=abc", "https://user:***@host/x?token=***"},
		// A user name alone is often a token (https://<token>@github.com).
		{"https://ghp_abc@host/x", "https://***@host/x"},
		{"https://user:p%40ss@host:8443/x", "https://user:***@host:8443/x"},
		{"http://host/x?a=1&token=abc&b=2", "http://host/x?a=1&token=***&b=2"},
		{"http://host/?Access_Token=a&API-Key=b&apikey=c&key=d&sig=e&signature=f&secret=g&password=h",
			"http://host/?Access_Token=***&API-Key=***&apikey=***&key=***&sig=***&signature=***&secret=***&password=***"},
		// Names ending in a sensitive word, with their separators.
		{"http://host/?X-Amz-Signature=a&client_secret=b&refresh-token=c&X-Amz-Credential=d&oauth=e",
			"http://host/?X-Amz-Signature=***&client_secret=***&refresh-token=***&X-Amz-Credential=***&oauth=***"},
		{"http://host/?tok%65n=a", "http://host/?tok%65n=***"},
		{"http://host/x;token=a", "http://host/x;token=a"}, // a path parameter, not a query
		{"http://host/?a=1;token=b", "http://host/?a=1;token=***"},
		{"http://host/cb#access_token=abc&state=1", "http://host/cb#access_token=***&state=1"},
		{"http://host/x?monkey=1&tokens=2", "http://host/x?monkey=***&tokens=2"},
		{"http://host/x?token", "http://host/x?token"},
		{"http://host/x?token=", "http://host/x?token="},
		// Nothing to hide: unchanged.
		{"https://sink.example/events?v=1", "https://sink.example/events?v=1"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/"},
		{"", ""},
		{"not a url", "not a url"},
		{"/events?token=abc", "/events?token=***"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			if got := MaskURL(tc.in); got != tc.want {
				t.Errorf("MaskURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestMaskURLsIn(t *testing.T) {
	cases := []struct{ in, want string }{
		{"POST https://user:pass@host/x?token=abc: 500 Internal Server Error",
			"POST https://user:***@host/x?token=***: 500 Internal Server Error"},
		{`parse "https://user:pass@host/x": net/url: invalid control character in URL`,
			`parse "https://user:***@host/x": net/url: invalid control character in URL`},
		{"a redirect to https://cdn/x?sig=abc&se=1, then https://u:p@other/y",
			"a redirect to https://cdn/x?sig=***&se=1, then https://u:***@other/y"},
		{"(see <https://u:p@host/?a=1>)", "(see <https://u:***@host/?a=1>)"},
		// A host may hold '>': a masked value runs to the URL's end.
		{"<https://h>o/?key=abc> next", "<https://h>o/?key=*** next"},
		{"no URL here: token=abc", "no URL here: token=abc"},
		{"://", "://"},
		{"", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			if got := MaskURLsIn(tc.in); got != tc.want {
				t.Errorf("MaskURLsIn(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestSinkErrorsMaskURLCredentials: every error a webhook returns, and so every status
// message, log line and deliveryerror attribute made from it, has the URL's credentials
// masked, in every content mode; classification still sees through it.
func TestSinkErrorsMaskURLCredentials(t *testing.T) {
	const password, token = "pa55w0rd", "t0k3n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			w.Header().Set("Location", "https://cdn.example/file?X-Amz-Signature="+token+"&a=1")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String() // nothing listens there: a connection error
	_ = ln.Close()
	client, err := NewClients(ClientOptions{}).For(TLSMaterial{})
	if err != nil {
		t.Fatal(err)
	}
	creds := "http://user:" + password + "@"
	cases := []struct{ name, url, reason string }{
		{"HTTP error", creds + host + "/x?token=" + token, ReasonServerError},
		{"redirect", creds + host + "/redirect?access_token=" + token, ReasonRedirect},
		{"connection refused", creds + closed + "/x?api_key=" + token, ReasonConnection},
		{"unparsable URL", creds + host + "/x\x7f?token=" + token, ReasonInvalid},
		{"denied address", creds + "169.254.169.254/x?sig=" + token, ReasonDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			for _, mode := range []string{"binary", "structured", "batched"} {
				w := &Webhook{URL: tc.url, Client: client, Structured: mode == "structured"}
				if mode == "batched" {
					w.Batch = 10
				}
				err := w.Send(context.Background(), testMessage())
				g.Expect(err).To(HaveOccurred())
				for _, text := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err),
					unwrappedTexts(err)} {
					g.Expect(text).NotTo(ContainSubstring(password), mode)
					g.Expect(text).NotTo(ContainSubstring(token), mode)
				}
				g.Expect(err.Error()).To(HavePrefix("POST http://user:***@"), "the URL is still named")
				g.Expect(FailureReason(err)).To(Equal(tc.reason), mode)
			}
		})
	}
}

// unwrappedTexts joins the messages of every error in err's chain: a caller that unwraps
// must not find the credentials either.
func unwrappedTexts(err error) string {
	var b strings.Builder
	for e := err; e != nil; e = errors.Unwrap(e) {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestDeadLetterAttributesAreMasked: sinks mask URL credentials in the attributes they send
// (a dead letter's deliveryerror), whatever error text they are given.
func TestDeadLetterAttributesAreMasked(t *testing.T) {
	g := NewWithT(t)
	const secret = "pa55w0rd"
	msg := testMessage()
	msg.Extensions = map[string]string{"deliveryerror": "POST https://u:" + secret + "@h/x?token=" + secret + ": EOF",
		"deliveryattempts": "3"}

	srv, got := recordingServer(t, http.StatusNoContent, nil)
	for _, mode := range []string{"binary", "structured", "batched"} {
		w := &Webhook{URL: srv.URL, Client: srv.Client(), Structured: mode == "structured"}
		if mode == "batched" {
			w.Batch = 10
		}
		g.Expect(w.Send(context.Background(), msg)).To(Succeed())
		r := <-got
		g.Expect(string(r.body)).NotTo(ContainSubstring(secret), mode)
		for k, v := range r.header {
			g.Expect(strings.Join(v, ",")).NotTo(ContainSubstring(secret), "%s header %s", mode, k)
		}
	}
	var lines []string
	l := &Log{Logger: funcr.NewJSON(func(obj string) { lines = append(lines, obj) }, funcr.Options{})}
	g.Expect(l.Send(context.Background(), msg)).To(Succeed())
	g.Expect(lines).To(HaveLen(1))
	g.Expect(lines[0]).NotTo(ContainSubstring(secret), "log sink")
	g.Expect(lines[0]).To(ContainSubstring("u:***@h/x?token=***"))
	g.Expect(msg.Extensions["deliveryerror"]).To(ContainSubstring(secret), "the caller's map is left alone")
}

// mark delimits the secrets FuzzMaskURL plants: letters and digits, which no escaping
// changes, so a secret that leaks in any form leaks its marks.
const mark = "Zq9X"

// FuzzMaskURL: whatever the user, password, host, path and query, the masked URL (alone,
// in an error text, quoted as url.Error quotes it, next to another URL) never holds the
// password, a user name standing alone (a token), or a sensitive parameter's value; values
// of other parameters stay.
func FuzzMaskURL(f *testing.F) {
	f.Add("user", "pass", "host.example:8443", "/x/y", "token", "abc", "v")
	f.Add("", "", "127.0.0.1", "", "Api-Key", "k=v&x", "")
	f.Add("ghp_x", "", "h", "/@scope/pkg", "sig", "a b+c%", "#frag")
	f.Add("u", "p@ss:/?#[]\"", "h\"o<s>t", "/a;b://c@d", "x-amz-signature", "s\n", "t")
	f.Fuzz(func(t *testing.T, user, password, host, path, param, value, other string) {
		for _, s := range []string{user, password, host, path, param, value, other} {
			if strings.Contains(strings.ToLower(s), strings.ToLower(mark)) {
				return
			}
		}
		if param == "other" {
			return
		}
		u := &url.URL{Scheme: "https", Host: host, Path: path}
		switch {
		case password != "":
			u.User = url.UserPassword(user, mark+password+mark)
		case user != "":
			u.User = url.User(mark + user + mark)
		}
		q := url.Values{}
		q.Set("other", other)
		q.Set(param, mark+value+mark)
		u.RawQuery = q.Encode()
		raw := u.String()
		texts := []string{MaskURL(raw), MaskURLsIn("POST " + raw + ": EOF"), MaskURLsIn(fmt.Sprintf("parse %q: invalid", raw)),
			MaskURLsIn(raw + "\n" + raw), MaskURLsIn("<" + raw + ">"), MaskURLsIn("https://a/?next=" + raw)}
		leaks := strings.Count(raw, mark) // what should be left: the value of a parameter that is not sensitive
		if sensitiveParam(param) {
			leaks = 0
		} else if u.User != nil {
			leaks -= 2
		}
		for i, m := range texts {
			copies := 1
			if i == 3 {
				copies = 2
			}
			if n := strings.Count(m, mark); n > leaks*copies {
				t.Fatalf("a credential of %q is left in %q", raw, m)
			}
		}
		if strings.Count(MaskURL(raw), mark) != leaks {
			t.Fatalf("%q masks as %q: a value that is no credential was masked", raw, MaskURL(raw))
		}
		if again := MaskURL(MaskURL(raw)); again != MaskURL(raw) {
			t.Fatalf("masking %q twice changes it: %q", MaskURL(raw), again)
		}
	})
}
