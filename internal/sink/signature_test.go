package sink

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	. "github.com/onsi/gomega"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// signedRequest is what a receiver got, and what the published verifier said of it.
type signedRequest struct {
	header   http.Header
	body     []byte
	verified error
}

// verifyingServer is a receiver on 127.0.0.1 that checks every request with the Standard
// Webhooks reference library, as receivers are told to.
func verifyingServer(t *testing.T, verifier *standardwebhooks.Webhook) (*httptest.Server, <-chan signedRequest) {
	t.Helper()
	ch := make(chan signedRequest, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := verifier.Verify(body, r.Header)
		ch <- signedRequest{header: r.Header.Clone(), body: body, verified: err}
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func threeChanges() []Message {
	msgs := make([]Message, 0, 3)
	for i, typ := range []event.Type{event.Added, event.Updated, event.Deleted} {
		obj := testObject()
		obj.SetResourceVersion(strconv.Itoa(42 + i))
		msgs = append(msgs, message(event.New(typ, configMaps, obj)))
	}
	return msgs
}

func TestSignedRequestsVerifyWithStandardWebhooks(t *testing.T) {
	raw := []byte("a raw signing key, as in a Secret")
	rawVerifier, err := standardwebhooks.NewWebhookRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	whsecVerifier, err := standardwebhooks.NewWebhook(whsec)
	if err != nil {
		t.Fatal(err)
	}
	keys := []struct {
		name     string
		secret   []byte
		verifier *standardwebhooks.Webhook
	}{{"raw key", raw, rawVerifier}, {"whsec_ secret", []byte(whsec + "\n"), whsecVerifier}}

	for _, k := range keys {
		for _, mode := range []string{"binary", "structured", "batched"} {
			t.Run(k.name+"/"+mode, func(t *testing.T) {
				g := NewWithT(t)
				key, err := ParseSigningKey(k.secret)
				g.Expect(err).NotTo(HaveOccurred())
				srv, reqs := verifyingServer(t, k.verifier)
				w := &Webhook{URL: srv.URL, Client: srv.Client(), SigningKey: key, Structured: mode == "structured",
					Header: http.Header{"X-Tenant": {"a"}}}
				msgs := threeChanges()
				before := time.Now().Unix()
				if mode == "batched" {
					w.Batch = 10
					g.Expect(w.SendBatch(t.Context(), msgs)).To(Succeed())
				} else {
					g.Expect(w.Send(t.Context(), msgs[1])).To(Succeed())
				}

				var r signedRequest
				g.Expect(reqs).To(Receive(&r))
				g.Expect(r.verified).NotTo(HaveOccurred())
				ts, err := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(ts).To(BeNumerically("~", before, 2), "unix seconds")
				g.Expect(r.header.Get("webhook-signature")).To(HavePrefix("v1,"))
				g.Expect(r.header.Get("X-Tenant")).To(Equal("a"))
				// Nothing describing the event travels outside the signed body.
				for name := range r.header {
					g.Expect(name).NotTo(HavePrefix("Ce-"), "an unsigned attribute header")
				}
				if mode == "batched" {
					g.Expect(r.header.Get("Content-Type")).To(Equal(BatchContentType))
					h := sha256.Sum256([]byte(msgs[0].Event.ID() + "\n" + msgs[1].Event.ID() + "\n" + msgs[2].Event.ID()))
					g.Expect(r.header.Get("webhook-id")).To(Equal("batch:" + hex.EncodeToString(h[:])))
					var batch []json.RawMessage
					g.Expect(json.Unmarshal(r.body, &batch)).To(Succeed())
					g.Expect(batch).To(HaveLen(3))
					return
				}
				// Signed binary goes structured: the attributes are in the signed body.
				g.Expect(r.header.Get("Content-Type")).To(Equal(StructuredContentType))
				g.Expect(r.header.Get("webhook-id")).To(Equal("u1:43:Updated"))
				var ce cloudevents.Event
				g.Expect(json.Unmarshal(r.body, &ce)).To(Succeed())
				g.Expect(ce.ID()).To(Equal("u1:43:Updated"))
				g.Expect(ce.Type()).To(Equal("io.dynamicnotifier.resource.updated"))
				g.Expect(ce.Subject()).To(Equal("/api/v1/namespaces/team-a/configmaps/settings"))
			})
		}
	}
}

// A receiver that verifies cannot be fooled into acting on another type, subject, object
// or id than was signed.
func TestTamperedSignedRequestsFailVerification(t *testing.T) {
	key := []byte("signing-key")
	verifier, err := standardwebhooks.NewWebhookRaw(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"binary", "batched"} {
		t.Run(mode, func(t *testing.T) {
			g := NewWithT(t)
			srv, reqs := verifyingServer(t, verifier)
			w := &Webhook{URL: srv.URL, Client: srv.Client(), SigningKey: key}
			if mode == "batched" {
				w.Batch = 10
			}
			g.Expect(w.Send(t.Context(), threeChanges()[1])).To(Succeed())
			var r signedRequest
			g.Expect(reqs).To(Receive(&r))
			g.Expect(r.verified).NotTo(HaveOccurred())

			replace := func(old, new string) []byte {
				g.Expect(r.body).To(ContainSubstring(old))
				return bytes.Replace(r.body, []byte(old), []byte(new), 1)
			}
			bodies := map[string][]byte{
				"type":    replace(`"type":"io.dynamicnotifier.resource.updated"`, `"type":"io.dynamicnotifier.resource.deleted"`),
				"subject": replace(`/configmaps/settings"`, `/configmaps/other"`),
				"data":    replace(`"color":"blue"`, `"color":"red"`),
				"id":      replace(`"id":"u1:43:Updated"`, `"id":"u1:44:Deleted"`),
			}
			for what, body := range bodies {
				g.Expect(verifier.Verify(body, r.header)).To(MatchError(standardwebhooks.ErrNoMatchingSignature), what)
			}
			for _, h := range []struct{ name, value string }{
				{"webhook-id", "u1:44:Deleted"},
				{"webhook-timestamp", strconv.FormatInt(time.Now().Unix()+1, 10)},
			} {
				header := r.header.Clone()
				header.Set(h.name, h.value)
				g.Expect(verifier.Verify(r.body, header)).To(MatchError(standardwebhooks.ErrNoMatchingSignature), h.name)
			}
			wrongKey, _ := standardwebhooks.NewWebhookRaw([]byte("another key"))
			g.Expect(wrongKey.Verify(r.body, r.header)).To(MatchError(standardwebhooks.ErrNoMatchingSignature))
		})
	}
}

// Every attempt carries the event's id and a signature of its own time.
func TestEachAttemptIsSignedAnew(t *testing.T) {
	g := NewWithT(t)
	key := []byte("signing-key")
	srv, reqs := recordingServer(t, http.StatusNoContent, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client(), SigningKey: key}
	msg := testMessage()
	g.Expect(w.Send(t.Context(), msg)).To(Succeed())
	g.Expect(w.Send(t.Context(), msg)).To(Succeed())
	var a, b received
	g.Expect(reqs).To(Receive(&a))
	g.Expect(reqs).To(Receive(&b))
	g.Expect(b.header.Get("webhook-id")).To(Equal(a.header.Get("webhook-id")), "receivers drop repeats by id")
	for _, r := range []received{a, b} {
		ts, err := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(r.header.Get("webhook-signature")).To(Equal(sign(key, r.header.Get("webhook-id"), time.Unix(ts, 0), r.body)))
	}
}

func TestUnsignedBinaryStaysBinary(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusNoContent, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client()}
	g.Expect(w.Send(t.Context(), testMessage())).To(Succeed())
	var r received
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.header.Get("Ce-Type")).To(Equal("io.dynamicnotifier.resource.added"))
	for _, h := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		g.Expect(r.header.Values(h)).To(BeEmpty())
	}
}

func TestParseSigningKey(t *testing.T) {
	g := NewWithT(t)
	decoded := []byte("0123456789abcdef0123456789abcdef")
	whsec := "whsec_" + base64.StdEncoding.EncodeToString(decoded)
	cases := []struct {
		in   string
		want []byte
	}{
		{"plain key", []byte("plain key")}, // as before: the Secret's bytes
		{" key with spaces\n", []byte(" key with spaces\n")},
		{whsec, decoded},
		{whsec + "\n", decoded}, // kubectl --from-file keeps the newline
	}
	for _, tc := range cases {
		got, err := ParseSigningKey([]byte(tc.in))
		g.Expect(err).NotTo(HaveOccurred(), tc.in)
		g.Expect(got).To(Equal(tc.want), tc.in)
	}
	for _, bad := range []string{"", "whsec_", "whsec_s3cr3t!", "whsec_" + strings.Repeat("=", 4)} {
		_, err := ParseSigningKey([]byte(bad))
		g.Expect(err).To(HaveOccurred(), bad)
		g.Expect(err.Error()).NotTo(ContainSubstring("s3cr3t"), "the error never repeats the secret")
	}
}
