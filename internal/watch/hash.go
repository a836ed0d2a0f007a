package watch

import (
	"hash/maphash"
	"math"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// seed is per process: hashes are only compared within one run.
var seed = maphash.MakeSeed()

// objectHashes fingerprints an object without the fields every write changes
// (metadata.resourceVersion, metadata.managedFields): one hash over the whole object and
// one over its metadata. Equal hashes across an update mean nothing visible changed. Maps
// are combined order-independently, so nothing is sorted and nothing allocated.
func objectHashes(obj map[string]any) (whole, meta uint64) {
	for k, v := range obj {
		var h uint64
		if k == "metadata" {
			if m, ok := v.(map[string]any); ok {
				meta = hashMap(m, true)
				h = mix(hashString(k), meta)
				whole += h
				continue
			}
		}
		h = mix(hashString(k), hashValue(v))
		whole += h
	}
	return whole, meta
}

func hashMap(m map[string]any, skipNoise bool) uint64 {
	var sum uint64
	for k, v := range m {
		if skipNoise && event.IsWriteNoise(k) {
			continue
		}
		sum += mix(hashString(k), hashValue(v))
	}
	return mix(sum, 0x6d)
}

func hashValue(v any) uint64 {
	switch t := v.(type) {
	case nil:
		return 0x9e3779b97f4a7c15
	case string:
		return hashString(t)
	case bool:
		if t {
			return 0x51
		}
		return 0x52
	case int64:
		return mix(uint64(t), 0x11)
	case float64:
		return mix(math.Float64bits(t), 0x12)
	case map[string]any:
		return hashMap(t, false)
	case []any:
		h := uint64(0x73)
		for _, e := range t {
			h = mix(h, hashValue(e)) // ordered
		}
		return h
	default:
		return 0x99
	}
}

func hashString(s string) uint64 { return maphash.String(seed, s) }

// mix combines two hashes (a variant of the splitmix64 finalizer).
func mix(a, b uint64) uint64 {
	x := a ^ (b + 0x9e3779b97f4a7c15 + (a << 6) + (a >> 2))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
