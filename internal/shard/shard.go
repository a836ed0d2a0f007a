// Package shard decides which replica serves which work: a pure function of the live
// members and the keys (rendezvous hashing, with bounded loads in Assign), so every replica
// that sees the same members and keys computes the same owners without talking to the
// others, and a member joining or leaving moves about its share (1/N) of the keys.
package shard

import (
	"cmp"
	"hash/fnv"
	"math"
	"slices"
	"strings"
)

// Owner is the member that serves key among members; "" when there are none. Members may
// be in any order and contain duplicates.
func Owner(members []string, key string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		s := score(m, key)
		if best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// Slack is how far above the mean a member's share of keys may grow in Assign: 15%.
const Slack = 0.15

// Assign maps each key to a member: rendezvous hashing with bounded loads. Keys are taken in
// a fixed order (by their hash) and each goes to the member that ranks it highest among
// those holding fewer than ceil((1+Slack)·keys/members). Without the bound, a few dozen
// keys spread unevenly (with 30 keys on 3 members, one often gets 14); with it no member
// gets more than 1.15 times the mean (rounded up), and a member joining or leaving still moves little
// more than its share. A pure function of the members and the set of keys: every replica
// that sees the same ones computes the same map.
func Assign(members, keys []string) map[string]string {
	members = slices.Compact(slices.Sorted(slices.Values(members)))
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	out := make(map[string]string, len(keys))
	if len(members) == 0 {
		return out
	}
	capacity := int(math.Ceil((1 + Slack) * float64(len(keys)) / float64(len(members))))
	order := slices.Clone(keys)
	slices.SortFunc(order, func(a, b string) int {
		return cmp.Or(cmp.Compare(keyHash(a), keyHash(b)), strings.Compare(a, b))
	})
	load := make(map[string]int, len(members))
	ranked := make([]string, len(members))
	for _, k := range order {
		copy(ranked, members)
		slices.SortFunc(ranked, func(a, b string) int {
			return cmp.Or(cmp.Compare(score(b, k), score(a, k)), strings.Compare(a, b))
		})
		for _, m := range ranked {
			if load[m] < capacity {
				out[k] = m
				load[m]++
				break
			}
		}
	}
	return out
}

func keyHash(key string) uint64 { return score("", key) }

// score is the weight of member for key: FNV-1a of both, spread by a 64-bit finalizer so
// names that differ in one character still score independently.
func score(member, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	x := h.Sum64()
	// splitmix64's finalizer
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// StreamKey is the shard key of a watch stream named as watch.Key.String() does
// ("configmaps./v1@team-a"): the resource without its namespace scope, so every stream of
// one resource, and every subscription reading it, lands on the same replica.
func StreamKey(stream string) string {
	if i := strings.LastIndexByte(stream, '@'); i >= 0 {
		return stream[:i]
	}
	return stream
}
