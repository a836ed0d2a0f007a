package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// TestKrewManifest: the krew manifest installs this binary under the name kubectl looks
// for (kubectl-notifier for `kubectl notifier`), from the archives make plugin-dist builds.
func TestKrewManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "plugins", "krew", "notifier.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion, Kind string
		Metadata         struct{ Name string }
		Spec             struct {
			Version, Homepage, ShortDescription, Description string
			Platforms                                        []struct {
				Selector         struct{ MatchLabels map[string]string }
				URI, SHA256, Bin string
			}
		}
	}
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin":
		t.Errorf("not a krew plugin manifest: %s %s", m.APIVersion, m.Kind)
	case m.Metadata.Name != "notifier":
		t.Errorf("krew installs kubectl-%s, kubectl runs kubectl-notifier", m.Metadata.Name)
	case !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(m.Spec.Version):
		t.Errorf("version %q is not semver with a v", m.Spec.Version)
	case len(m.Spec.Platforms) == 0:
		t.Errorf("no platforms")
	}
	for _, p := range m.Spec.Platforms {
		goos, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		wantBin := "kubectl-notifier"
		if goos == "windows" {
			wantBin += ".exe"
		}
		if p.Bin != wantBin {
			t.Errorf("%s/%s: bin %q, the archive holds %q", goos, arch, p.Bin, wantBin)
		}
		if !strings.HasSuffix(p.URI, "/"+m.Spec.Version+"/kubectl-notifier_"+goos+"_"+arch+".tar.gz") {
			t.Errorf("%s/%s: uri %s is not the archive make plugin-dist builds for this version", goos, arch, p.URI)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(p.SHA256) {
			t.Errorf("%s/%s: sha256 %q", goos, arch, p.SHA256)
		}
	}
}
