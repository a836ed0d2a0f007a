// Package shard decides which replica serves which work: a pure function of the live
// members and a key (rendezvous hashing), so every replica that sees the same members
// computes the same owner without talking to the others, and a member joining or leaving
// moves only the keys it wins or held (about 1/N of them).
package shard

import (
	"hash/fnv"
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

// Assign maps each key to its Owner among members.
func Assign(members, keys []string) map[string]string {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k] = Owner(members, k)
	}
	return out
}

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
