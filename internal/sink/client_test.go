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

	plain1, err := c.For(TLSMaterial{})
	g.Expect(err).NotTo(HaveOccurred())
	plain2, err := c.For(TLSMaterial{})
	g.Expect(err).NotTo(HaveOccurred())
	insecure, err := c.For(TLSMaterial{InsecureSkipVerify: true})
	g.Expect(err).NotTo(HaveOccurred())
	withCA1, err := c.For(TLSMaterial{CA: ca})
	g.Expect(err).NotTo(HaveOccurred())
	withCA2, err := c.For(TLSMaterial{CA: append([]byte(nil), ca...)})
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
			cl, err := c.For(TLSMaterial{CA: tc.pem})
			g.Expect(err).To(HaveOccurred())
			g.Expect(cl).To(BeNil())
			// A failure must not be cached as a usable client.
			_, err = c.For(TLSMaterial{CA: tc.pem})
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
			cl, err := NewClients(ClientOptions{}).For(TLSMaterial{CA: tc.ca, InsecureSkipVerify: tc.insecure})
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
