package samples

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var yamlFence = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestDocumentedObjectsAreAccepted: every object of our API written out in the README and
// docs/ is accepted by the API server as it is written, and its filter and template compile,
// so what users copy from the docs works like the samples do.
func TestDocumentedObjectsAreAccepted(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join(testenv.RepoRoot(), "README.md"))
	found := 0
	for _, page := range pages {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(page)
		for _, block := range yamlFence.FindAllStringSubmatch(string(data), -1) {
			for doc := range strings.SplitSeq(block[1], "\n---\n") {
				if !strings.Contains(doc, notifyv1.GroupVersion.Group+"/") {
					continue
				}
				u := &unstructured.Unstructured{}
				if err := yaml.UnmarshalStrict([]byte(doc), &u.Object); err != nil {
					t.Errorf("%s: a YAML block does not parse: %v\n%s", name, err, doc)
					continue
				}
				if u.GroupVersionKind().Group != notifyv1.GroupVersion.Group {
					continue
				}
				found++
				checkDocumented(t, name, u)
			}
		}
	}
	t.Logf("%d documented objects", found)
	if found < 3 {
		t.Fatalf("found %d objects of %s in the docs; the pattern no longer finds them", found, notifyv1.GroupVersion.Group)
	}
}

// checkDocumented dry-runs one documented object and compiles its CEL.
func checkDocumented(t *testing.T, page string, u *unstructured.Unstructured) {
	t.Helper()
	what := page + ": " + u.GetKind() + " " + u.GetName()
	if u.GetKind() != kindClusterWatchSink {
		if u.GetNamespace() == "" {
			u.SetNamespace(sampleNamespace)
		}
		ensureNamespace(t, u.GetNamespace())
	}
	if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
		t.Errorf("%s is refused by the API server: %v", what, err)
	}
	if expr, _, _ := unstructured.NestedString(u.Object, "spec", "filter"); expr != "" {
		if _, err := filter.CompileCEL(expr); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	if expr, _, _ := unstructured.NestedString(u.Object, "spec", "payload", "template"); expr != "" {
		if _, err := template.Compile(expr, ""); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
}
