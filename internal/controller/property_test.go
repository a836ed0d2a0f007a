package controller_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// TestEveryAcceptedSpecDecodesAndSettles is a property test of the API and the operator
// together: random specs, most of them near the edge of what the schema allows, go to the
// real API server. Every one it accepts must decode with our Go types and reach a Ready
// condition for its generation, whatever it says: no accepted object may stop the operator
// or leave its subscription without an answer.
//
// PROPERTY_SEED picks another sequence (the default is fixed, so CI runs the same specs);
// PROPERTY_SPECS sets how many are tried.
func TestEveryAcceptedSpecDecodesAndSettles(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	seed := envInt("PROPERTY_SEED", 20261201)
	tries := envInt("PROPERTY_SPECS", 160)
	t.Logf("seed %d, %d specs (PROPERTY_SEED, PROPERTY_SPECS)", seed, tries)
	gen := &specGen{r: rand.New(rand.NewPCG(uint64(seed), 7)), home: newNamespace(t), other: newNamespace(t)}

	startOperator(t)
	var accepted []string
	rejected := map[string]int{}
	for i := range tries {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "notify.dynamicnotifier.io/v1alpha1", "kind": "WatchSubscription",
			"metadata": map[string]any{"namespace": gen.home, "name": fmt.Sprintf("random-%03d", i)},
			"spec":     gen.spec(),
		}}
		if err := k8s.Create(ctx, u); err != nil {
			field := err.Error()
			if _, after, ok := strings.Cut(field, "spec."); ok {
				field, _, _ = strings.Cut("spec."+after, ":")
			}
			rejected[field]++
			continue
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), u) })
		accepted = append(accepted, u.GetName())
	}
	t.Logf("%d accepted, %d rejected by the API server: %v", len(accepted), tries-len(accepted), rejected)
	g.Expect(len(accepted)).To(BeNumerically(">=", tries/4), "the generator should produce mostly acceptable specs")

	list := &notifyv1.WatchSubscriptionList{}
	g.Expect(k8s.List(ctx, list, client.InNamespace(gen.home))).To(Succeed(), "every stored subscription decodes")
	reasons := map[string]int{}
	for _, name := range accepted {
		ws := &notifyv1.WatchSubscription{}
		g.Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: gen.home, Name: name}, ws)).To(Succeed())
			cond := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady)
			g.Expect(cond).NotTo(BeNil(), "no Ready condition")
			g.Expect(cond.ObservedGeneration).To(Equal(ws.Generation))
			g.Expect(ws.Status.ObservedGeneration).To(Equal(ws.Generation))
		}).WithTimeout(60*time.Second).Should(Succeed(), "subscription %s settles; spec: %+v", name, ws.Spec)
		reasons[meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady).Reason]++
	}
	t.Logf("Ready reasons of the accepted specs: %v", reasons)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// specGen makes random WatchSubscription specs. It never lets one deliver anywhere but
// loopback: every resource it names has no objects in the namespaces it watches (fresh
// namespaces, or a resource nothing creates), so sinks are built but never dialled, and
// webhook URLs point at 127.0.0.1.
type specGen struct {
	r           *rand.Rand
	home, other string
}

func (g *specGen) pick(options ...any) any { return options[g.r.IntN(len(options))] }

// edge picks one of valid, or now and then one of invalid: a spec has many fields, and
// each may be the one that is wrong.
func (g *specGen) edge(valid, invalid []any) any {
	if g.chance(0.05) {
		return invalid[g.r.IntN(len(invalid))]
	}
	return valid[g.r.IntN(len(valid))]
}
func (g *specGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *specGen) spec() map[string]any {
	spec := map[string]any{}
	allNamespaces := g.chance(0.15)
	spec["resource"] = g.resource(allNamespaces)
	if allNamespaces {
		spec["namespaces"] = g.pick([]any{"*"}, []any{"*", g.home})
	} else if g.chance(0.4) {
		spec["namespaces"] = g.edge([]any{[]any{g.home, g.other}, []any{g.other}, []any{"no-such-namespace"}},
			[]any{[]any{"Bad_NS"}, []any{g.home, g.home}})
	}
	if g.chance(0.3) {
		spec["selector"] = g.selector()
	}
	if g.chance(0.2) {
		spec["fieldSelector"] = g.pick("metadata.name=x", "status.phase!=Running", "bad selector !!", "a==b==c", "",
			strings.Repeat("a", 1025))
	}
	if g.chance(0.3) {
		spec["filter"] = g.pick(`object.metadata.name == "x"`, `eventType == "Updated" && object.data.k != oldObject.data.k`,
			`object.metadata.name`, `1 +`, `size(object.metadata.name) > 3`, `has(object.spec)`, "")
	}
	if g.chance(0.2) {
		spec["ignore"] = map[string]any{"statusOnly": g.chance(0.5), "metadataOnly": g.chance(0.5)}
	}
	if g.chance(0.3) {
		spec["payload"] = map[string]any{"mode": g.edge([]any{"Full", "Metadata", "Reference"}, []any{"Everything"}),
			"includeOldObject": g.chance(0.5), "includeChangedPaths": g.chance(0.5), "includeSecretData": g.chance(0.2)}
	}
	if g.chance(0.3) {
		spec["eventTypes"] = g.edge([]any{[]any{"Added"}, []any{"Updated", "Deleted"}}, []any{[]any{"Created"}, []any{"Added", "Added"}})
	}
	if g.chance(0.3) {
		spec["sendInitialEvents"] = true
	}
	if g.chance(0.15) {
		spec["suspend"] = true
	}
	if g.chance(0.3) {
		spec["serviceAccountName"] = g.edge([]any{"default", "robot"}, []any{"Not_Valid", strings.Repeat("a", 254)})
	}
	if !g.chance(0.02) {
		spec["sink"] = g.sink()
	}
	if g.chance(0.6) {
		spec["delivery"] = g.delivery()
	}
	return spec
}

func (g *specGen) resource(allNamespaces bool) map[string]any {
	if allNamespaces {
		// Nothing in this test suite creates pod templates: a watch of all namespaces
		// finds none.
		return map[string]any{"version": "v1", "resource": "podtemplates"}
	}
	return g.edge([]any{
		map[string]any{"version": "v1", "resource": "configmaps"},
		map[string]any{"version": "v1", "resource": "secrets"},
		map[string]any{"group": "", "version": "v1", "resource": "pods/log"},
		map[string]any{"group": "example.com", "version": "v1", "resource": "widgets"},
		map[string]any{"group": "apps", "version": "v1", "resource": "deployments"},
	}, []any{
		map[string]any{"group": "Bad", "version": "v1", "resource": "x"},
		map[string]any{"version": "V1", "resource": "configmaps"},
		map[string]any{"version": "v1", "resource": "a/b/c"},
		map[string]any{"version": "v1"},
	}).(map[string]any)
}

func (g *specGen) selector() map[string]any {
	sel := map[string]any{}
	if g.chance(0.6) {
		sel["matchLabels"] = map[string]any{g.edge([]any{"app", "tier"}, []any{"bad key!", ""}).(string): g.edge([]any{"web", ""}, []any{"-bad"}).(string)}
	}
	if g.chance(0.6) {
		op := g.edge([]any{"In", "NotIn", "Exists", "DoesNotExist"}, []any{"Equals"}).(string)
		expr := map[string]any{"key": g.edge([]any{"app", "tier"}, []any{""}).(string), "operator": op}
		if op == "In" || op == "NotIn" || g.chance(0.05) {
			expr["values"] = g.edge([]any{[]any{"a"}, []any{"a", "b"}}, []any{[]any{}})
		}
		sel["matchExpressions"] = []any{expr}
	}
	return sel
}

func (g *specGen) sink() map[string]any {
	switch g.r.IntN(6) {
	case 0:
		return map[string]any{"log": map[string]any{}}
	case 1:
		if g.chance(0.2) {
			return map[string]any{"log": map[string]any{}, "webhook": map[string]any{"url": "http://127.0.0.1:1/x"}}
		}
		return map[string]any{"log": map[string]any{}}
	case 2, 3:
		return map[string]any{"webhook": g.http(map[string]any{"url": g.edge([]any{"http://127.0.0.1:1/events",
			"https://127.0.0.1:1/x?y=1", "http://user:pass@127.0.0.1:1/x"}, []any{"ftp://127.0.0.1/x", "not a url", "http:///x",
			"http://127.0.0.1:1/" + strings.Repeat("p", 2100)})})}
	default:
		svc := map[string]any{"name": g.edge([]any{"hook", "h"}, []any{"Hook_1"}).(string)}
		if g.chance(0.5) {
			svc["port"] = g.edge([]any{1, 8080, 65535}, []any{0, 65536, -1})
		}
		if g.chance(0.3) {
			svc["path"] = g.edge([]any{"/events", "/"}, []any{"events", "/a b"})
		}
		if g.chance(0.3) {
			svc["namespace"] = g.edge([]any{g.other, "elsewhere"}, []any{"Bad_NS"})
		}
		return map[string]any{"service": g.http(svc)}
	}
}

func (g *specGen) http(h map[string]any) map[string]any {
	if g.chance(0.4) {
		h["contentMode"] = g.edge([]any{"binary", "structured", "batched"}, []any{"batch"})
		if h["contentMode"] == "batched" && g.chance(0.5) {
			h["maxBatchSize"] = g.edge([]any{1, 100, 1000}, []any{0, 1001})
		}
	}
	if g.chance(0.05) {
		h["maxBatchSize"] = 10 // without batched mode: refused
	}
	if g.chance(0.2) {
		h["headersFrom"] = map[string]any{"secretRef": map[string]any{"name": g.edge([]any{"hook-auth"}, []any{"", "Bad_Name"})}}
	}
	if g.chance(0.2) {
		h["tls"] = map[string]any{"caSecretRef": map[string]any{"name": "ca", "key": g.edge([]any{"ca.crt"}, []any{"bad key"})},
			"insecureSkipVerify": g.chance(0.5)}
	}
	if g.chance(0.2) {
		h["signingSecretRef"] = map[string]any{"name": g.edge([]any{"signing"}, []any{""}), "key": "key"}
	}
	return h
}

func (g *specGen) delivery() map[string]any {
	d := map[string]any{}
	if g.chance(0.4) {
		d["timeout"] = g.duration()
	}
	if g.chance(0.3) {
		d["maxQueueSize"] = g.edge([]any{1, 100, 100000}, []any{0, 100001, -5})
	}
	if g.chance(0.3) {
		d["parallelism"] = g.edge([]any{1, 4, 64}, []any{0, 65})
	}
	if g.chance(0.6) {
		retry := map[string]any{}
		if g.chance(0.5) {
			retry["maxAttempts"] = g.edge([]any{1, 12, 100}, []any{0, 101})
		}
		if g.chance(0.6) {
			retry["backoff"] = g.duration()
		}
		if g.chance(0.6) {
			retry["maxBackoff"] = g.duration()
		}
		d["retry"] = retry
	}
	if g.chance(0.15) {
		d["deadLetterSink"] = g.sink()
	}
	return d
}

// duration writes a duration string near the edges: big numbers, several parts, decimals,
// zero, and things that are no duration at all.
func (g *specGen) duration() string {
	units := []string{"ms", "s", "m", "h", "us", "d", ""}
	number := func() string {
		digits := 1 + g.r.IntN(9)
		if g.chance(0.1) {
			digits = 10 + g.r.IntN(15)
		}
		var b strings.Builder
		for range digits {
			b.WriteByte(byte('0' + g.r.IntN(10)))
		}
		if g.chance(0.2) {
			b.WriteString("." + strconv.Itoa(g.r.IntN(1000)))
		}
		return b.String()
	}
	switch g.r.IntN(8) {
	case 0:
		return g.pick("0s", "0ms", "1ms", "1h", "24h", "25h", "61m", "soon", "", "-1s", "1h1h1h1h1h1h1h", "1.5s", "0.001s").(string)
	case 1, 2, 3, 4:
		return strconv.Itoa(1+g.r.IntN(59)) + g.pick("ms", "s", "m").(string)
	default:
		var b strings.Builder
		for range 1 + g.r.IntN(3) {
			b.WriteString(number() + units[g.r.IntN(len(units))])
		}
		return b.String()
	}
}
