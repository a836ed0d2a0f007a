package sink

import (
	"encoding/json"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

func TestLogWritesOneLinePerEvent(t *testing.T) {
	g := NewWithT(t)
	var lines []string
	// JSON output so the test reads fields rather than matching a text layout.
	logger := funcr.NewJSON(func(obj string) { lines = append(lines, obj) }, funcr.Options{})
	l := &Log{Logger: logger}
	msg := testMessage()
	msg.Extensions = map[string]string{"deliveryattempts": "1"}

	g.Expect(l.Send(t.Context(), msg)).To(Succeed())

	g.Expect(lines).To(HaveLen(1))
	var line map[string]any
	g.Expect(json.Unmarshal([]byte(lines[0]), &line)).To(Succeed())
	g.Expect(line).To(HaveKeyWithValue("msg", "Event"))
	g.Expect(line).To(HaveKeyWithValue("id", "u1:42:Added"))
	g.Expect(line).To(HaveKeyWithValue("type", "io.dynamicnotifier.resource.added"))
	g.Expect(line).To(HaveKeyWithValue("source", testSource))
	g.Expect(line).To(HaveKeyWithValue("subject", "/api/v1/namespaces/team-a/configmaps/settings"))
	g.Expect(line).To(HaveKeyWithValue("datacontenttype", "application/json"))
	g.Expect(line).To(HaveKeyWithValue("extensions", HaveKeyWithValue("deliveryattempts", "1")))
	want, err := json.Marshal(testObject().Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(line["data"]).To(MatchJSON(want))
}

// TestLogUnencodableObjectGoesAsAReference: the log sink, like webhooks, logs a message
// without data (its object could not be encoded) as a reference to the object.
func TestLogUnencodableObjectGoesAsAReference(t *testing.T) {
	g := NewWithT(t)
	var lines []string
	l := &Log{Logger: logr.New(funcr.NewJSON(func(obj string) { lines = append(lines, obj) }, funcr.Options{}).GetSink())}
	obj := testObject()
	obj.Object["bad"] = make(chan int)
	msg := message(event.New(event.Added, configMaps, obj))

	g.Expect(l.Send(t.Context(), msg)).To(Succeed())

	g.Expect(lines).To(HaveLen(1))
	var line map[string]any
	g.Expect(json.Unmarshal([]byte(lines[0]), &line)).To(Succeed())
	g.Expect(line["data"]).To(MatchJSON(`{"apiVersion":"v1","kind":"ConfigMap","namespace":"team-a","name":"settings",
		"uid":"u1","resourceVersion":"42"}`))
}
