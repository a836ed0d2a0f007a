package sink

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"

	. "github.com/onsi/gomega"
)

func TestClientsShareOnePerSetting(t *testing.T) {
	g := NewWithT(t)
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := NewClients(ClientOptions{})

	plain1, err := c.For(nil, false)
	g.Expect(err).NotTo(HaveOccurred())
	plain2, err := c.For(nil, false)
	g.Expect(err).NotTo(HaveOccurred())
	insecure, err := c.For(nil, true)
	g.Expect(err).NotTo(HaveOccurred())
	withCA1, err := c.For(ca, false)
	g.Expect(err).NotTo(HaveOccurred())
	withCA2, err := c.For(append([]byte(nil), ca...), false)
	g.Expect(err).NotTo(HaveOccurred())

	// Same settings share a client (and so its connection pool); different ones do not.
	g.Expect(plain2).To(BeIdenticalTo(plain1))
	g.Expect(withCA2).To(BeIdenticalTo(withCA1))
	g.Expect(insecure).NotTo(BeIdenticalTo(plain1))
	g.Expect(withCA1).NotTo(BeIdenticalTo(plain1))
	g.Expect(withCA1).NotTo(BeIdenticalTo(insecure))
}

func TestClientsRejectBadPEM(t *testing.T) {
	cases := []struct {
		name string
		pem  []byte
	}{
		{"not PEM", []byte("hello")},
		{"PEM but not a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := NewClients(ClientOptions{})
			cl, err := c.For(tc.pem, false)
			g.Expect(err).To(HaveOccurred())
			g.Expect(cl).To(BeNil())
			// A failure must not be cached as a usable client.
			_, err = c.For(tc.pem, false)
			g.Expect(err).To(HaveOccurred())
		})
	}
}

func TestClientsTLSTrust(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cases := []struct {
		name     string
		ca       []byte
		insecure bool
		ok       bool
	}{
		{"with the server's CA", ca, false, true},
		{"system roots only", nil, false, false},
		{"insecureSkipVerify", nil, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			cl, err := NewClients(ClientOptions{}).For(tc.ca, tc.insecure)
			g.Expect(err).NotTo(HaveOccurred())
			w := &Webhook{URL: srv.URL, Client: cl}
			err = w.Send(t.Context(), testMessage())
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring("certificate")))
		})
	}
}
