package shard

import (
	"fmt"
	"maps"
	"math"
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

// owners maps keys with Owner alone, without bounded loads.
func owners(members, keys []string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = Owner(members, k)
	}
	return out
}

func TestOwnerMovesOnlyTheKeysOfWhoJoinedOrLeft(t *testing.T) {
	all := keys(3000)
	tests := []struct {
		name          string
		before, after []string
		wantShare     float64 // the newcomer's share of the keys, or the leaver's
	}{
		{"3 to 4", members(3), members(4), 1.0 / 4},
		{"5 to 4", members(5), members(4), 1.0 / 5},
		{"1 to 2", members(1), members(2), 1.0 / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := owners(tt.before, all), owners(tt.after, all)
			for k := range before {
				if before[k] != after[k] && slices.Contains(tt.before, after[k]) && slices.Contains(tt.after, before[k]) {
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

func TestAssignMovesAboutTheShareOfWhoJoinedOrLeft(t *testing.T) {
	tests := []struct {
		name          string
		keys          int
		before, after []string
		// ideal is the least share that must move: what the newcomers take, or what the
		// leavers held.
		ideal float64
	}{
		{"30 keys, 3 to 5", 30, members(3), members(5), 2.0 / 5},
		{"30 keys, 5 to 2", 30, members(5), members(2), 3.0 / 5},
		{"30 keys, 3 to 2", 30, members(3), members(2), 1.0 / 3},
		{"30 keys, 1 to 2", 30, members(1), members(2), 1.0 / 2},
		{"300 keys, 3 to 4", 300, members(3), members(4), 1.0 / 4},
		{"300 keys, 4 to 3", 300, members(4), members(3), 1.0 / 4},
		{"3000 keys, 8 to 9", 3000, members(8), members(9), 1.0 / 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all := keys(tt.keys)
			share := float64(moved(Assign(tt.before, all), Assign(tt.after, all))) / float64(len(all))
			// Bounded loads move a little more than the ideal: never less, at most 1.5 times.
			if share < tt.ideal*0.8 || share > tt.ideal*1.5 {
				t.Errorf("moved %.3f of the keys, want about %.3f", share, tt.ideal)
			}
		})
	}
}

func TestAssignSpreadsEvenly(t *testing.T) {
	for _, tt := range []struct{ keys, members int }{{30, 2}, {30, 3}, {30, 5}, {7, 3}, {300, 4}, {3000, 8}} {
		t.Run(fmt.Sprintf("%d keys on %d", tt.keys, tt.members), func(t *testing.T) {
			all := keys(tt.keys)
			got := Assign(members(tt.members), all)
			if len(got) != len(all) {
				t.Fatalf("%d keys assigned, want %d", len(got), len(all))
			}
			counts := map[string]int{}
			for _, o := range got {
				counts[o]++
			}
			mean := float64(len(all)) / float64(tt.members)
			for m, c := range counts {
				if c > int(math.Ceil((1+Slack)*mean)) {
					t.Errorf("%s has %d keys, over %.2f times the mean %.1f", m, c, 1+Slack, mean)
				}
			}
		})
	}
}

func TestAssignIsAPureFunction(t *testing.T) {
	all := keys(50)
	a := Assign([]string{"r1", "r2", "r3"}, all)
	reversed := slices.Clone(all)
	slices.Reverse(reversed)
	b := Assign([]string{"r3", "r1", "r2", "r1"}, append(reversed, all[:5]...))
	if !maps.Equal(a, b) {
		t.Fatal("the assignment depends on the order or repetitions of members or keys")
	}
	if got := Assign(nil, all); len(got) != 0 {
		t.Fatalf("no members: %d keys assigned", len(got))
	}
	for k, o := range Assign([]string{"only"}, all) {
		if o != "only" {
			t.Fatalf("%s went to %s with one member", k, o)
		}
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
