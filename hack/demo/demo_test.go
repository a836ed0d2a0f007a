package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// TestDemoOnce runs the whole demo as `make demo` does, with -once and a random port, and
// checks what a user would see: the three events in order and the kubectl table.
func TestDemoOnce(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var out testenv.Buffer
	err := run(ctx, options{Once: true, Port: 0}, &out)
	text := out.String()
	g.Expect(err).NotTo(HaveOccurred(), text)

	subject := "/api/v1/namespaces/default/configmaps/demo-settings"
	last := -1
	for _, typ := range []string{"added", "updated", "deleted"} {
		line := "received  io.dynamicnotifier.resource." + typ + "  " + subject + "  id="
		i := strings.Index(text, line)
		g.Expect(i).To(BeNumerically(">", last), "%s event missing or out of order:\n%s", typ, text)
		last = i
	}

	g.Expect(text).To(MatchRegexp(`(?m)^NAMESPACE\s+NAME\s+RESOURCE\s+SINK\s+READY\s+REASON\s+AGE\s+REPLICA\s+MESSAGE$`))
	g.Expect(text).To(MatchRegexp(`(?m)^default\s+configmaps-to-webhook\s+v1/configmaps\s+webhook\s+True\s+Watching\s`))

	// Cleanup happened: the temp dir with the kubeconfig is gone.
	m := regexp.MustCompile(`kubeconfig (\S+)`).FindStringSubmatch(text)
	g.Expect(m).To(HaveLen(2), text)
	_, statErr := os.Stat(m[1])
	g.Expect(os.IsNotExist(statErr)).To(BeTrue(), "kubeconfig %s left behind", m[1])
}
