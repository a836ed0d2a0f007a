package sink

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	. "github.com/onsi/gomega"
)

// HTTP_PROXY and HTTPS_PROXY are not read by default: the dial check would see the proxy's
// address instead of the sink's.
func TestSinksConnectDirectlyByDefault(t *testing.T) {
	g := NewWithT(t)
	for _, insecure := range []bool{false, true} {
		cl, err := NewClients(ClientOptions{}).For(TLSMaterial{InsecureSkipVerify: insecure})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cl.Transport.(*guardedTransport).proxy).To(BeNil())
	}
}

func TestSinksThroughAProxyWhenTold(t *testing.T) {
	g := NewWithT(t)
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.RequestURI)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer proxy.Close()
	proxyURL, err := url.Parse(proxy.URL)
	g.Expect(err).NotTo(HaveOccurred())
	cl, err := NewClients(ClientOptions{Proxy: http.ProxyURL(proxyURL)}).For(TLSMaterial{})
	g.Expect(err).NotTo(HaveOccurred())

	// sink.invalid is never resolved: the proxy gets the request.
	g.Expect((&Webhook{URL: "http://sink.invalid/hook", Client: cl}).Send(t.Context(), testMessage())).To(Succeed())
	g.Expect(seen).To(Equal([]string{"POST http://sink.invalid/hook"}))

	// The proxy would reach a denied address for us: the URL check stops it first.
	err = (&Webhook{URL: "http://2852039166/latest/meta-data/", Client: cl}).Send(t.Context(), testMessage())
	g.Expect(err).To(MatchError(ErrDeniedAddress))
	g.Expect(seen).To(HaveLen(1), "nothing more reached the proxy")
}
