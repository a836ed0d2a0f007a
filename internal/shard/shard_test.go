package shard

import (
	"fmt"
	"slices"
	"testing"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("resource%d.example.com/v1", i)
	}
	return out
}

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("dynamic-notifier-7d9f8-%c%c", 'a'+i, 'x'+i%3)
	}
	return out
}

func TestOwner(t *testing.T) {
	tests := []struct {
		name    string
		members []string
		want    func(got string) error
	}{
		{"no members", nil, func(got string) error {
			if got != "" {
				return fmt.Errorf("owner %q, want none", got)
			}
			return nil
		}},
		{"one member owns everything", []string{"a"}, func(got string) error {
			if got != "a" {
				return fmt.Errorf("owner %q, want a", got)
			}
			return nil
		}},
		{"a member of the list", []string{"a", "b", "c"}, func(got string) error {
			if !slices.Contains([]string{"a", "b", "c"}, got) {
				return fmt.Errorf("owner %q is no member", got)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range keys(20) {
				if err := tt.want(Owner(tt.members, k)); err != nil {
					t.Errorf("%s: %v", k, err)
				}
			}
		})
	}
}

func TestOwnerIgnoresOrderAndDuplicates(t *testing.T) {
	a := []string{"r1", "r2", "r3", "r4"}
	b := []string{"r4", "r2", "r2", "r1", "r3", "r1"}
	for _, k := range keys(200) {
		if Owner(a, k) != Owner(b, k) {
			t.Fatalf("%s: owner depends on order or duplicates: %s vs %s", k, Owner(a, k), Owner(b, k))
		}
	}
}

// moved counts the keys whose owner differs.
func moved(before, after map[string]string) int {
	n := 0
	for k, o := range before {
		if after[k] != o {
			n++
		}
	}
	return n
}

func TestChangesMoveOnlyTheirShare(t *testing.T) {
	all := keys(3000)
	tests := []struct {
		name          string
		before, after []string
		// wantShare: the newcomer's share of the keys, or the leaver's
		wantShare float64
	}{
		{"3 to 4", members(3), members(4), 1.0 / 4},
		{"4 to 5", members(4), members(5), 1.0 / 5},
		{"5 to 4", members(5), members(4), 1.0 / 5},
		{"3 to 2", members(3), members(2), 1.0 / 3},
		{"1 to 2", members(1), members(2), 1.0 / 2},
		{"2 to 1", members(2), members(1), 1.0 / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := Assign(tt.before, all), Assign(tt.after, all)
			for k := range before {
				if before[k] == after[k] {
					continue
				}
				joined := !slices.Contains(tt.before, after[k])
				left := !slices.Contains(tt.after, before[k])
				if !joined && !left {
					t.Fatalf("%s moved from %s to %s, neither of which joined or left", k, before[k], after[k])
				}
			}
			share := float64(moved(before, after)) / float64(len(all))
			if share < tt.wantShare*0.8 || share > tt.wantShare*1.2 {
				t.Errorf("moved %.3f of the keys, want about %.3f", share, tt.wantShare)
			}
		})
	}
}

func TestSpreadIsEven(t *testing.T) {
	for _, n := range []int{2, 3, 5, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			all := keys(3000)
			counts := map[string]int{}
			for _, o := range Assign(members(n), all) {
				counts[o]++
			}
			if len(counts) != n {
				t.Fatalf("%d members got keys, want %d", len(counts), n)
			}
			mean := float64(len(all)) / float64(n)
			for m, c := range counts {
				if ratio := float64(c) / mean; ratio > 1.1 || ratio < 0.9 {
					t.Errorf("%s has %d keys, %.2f of the mean", m, c, ratio)
				}
			}
		})
	}
}

func TestStreamKey(t *testing.T) {
	tests := []struct{ stream, want string }{
		{"configmaps./v1@team-a", "configmaps./v1"},
		{"configmaps./v1@*", "configmaps./v1"},
		{"deployments.apps/v1@*", "deployments.apps/v1"},
		{"widgets.example.com/v1", "widgets.example.com/v1"},
	}
	for _, tt := range tests {
		if got := StreamKey(tt.stream); got != tt.want {
			t.Errorf("StreamKey(%q) = %q, want %q", tt.stream, got, tt.want)
		}
	}
}
