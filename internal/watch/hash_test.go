package watch

import "testing"

func TestObjectHashesIgnoreWriteNoise(t *testing.T) {
	obj := func(rv string, managed any, data string, labels map[string]any) map[string]any {
		return map[string]any{
			"metadata": map[string]any{"name": "c", "resourceVersion": rv, "managedFields": managed, "labels": labels},
			"data":     map[string]any{"k": data},
			"list":     []any{"a", int64(1), 2.5, true, nil},
		}
	}
	base, baseMeta := objectHashes(obj("1", nil, "v", map[string]any{"a": "b"}))
	cases := []struct {
		name                string
		o                   map[string]any
		sameWhole, sameMeta bool
	}{
		{"resourceVersion and managedFields only", obj("2", []any{map[string]any{"manager": "x"}}, "v", map[string]any{"a": "b"}), true, true},
		{"data changed", obj("2", nil, "w", map[string]any{"a": "b"}), false, true},
		{"label changed", obj("2", nil, "v", map[string]any{"a": "c"}), false, false},
		{"label key and value swapped", obj("1", nil, "v", map[string]any{"b": "a"}), false, false},
	}
	for _, tc := range cases {
		whole, meta := objectHashes(tc.o)
		if (whole == base) != tc.sameWhole || (meta == baseMeta) != tc.sameMeta {
			t.Errorf("%s: same whole %v (want %v), same meta %v (want %v)", tc.name,
				whole == base, tc.sameWhole, meta == baseMeta, tc.sameMeta)
		}
	}
	reordered := map[string]any{"b": int64(1), "a": int64(2)}
	if hashValue(reordered) != hashValue(map[string]any{"a": int64(2), "b": int64(1)}) {
		t.Error("map order must not matter")
	}
	if hashValue([]any{"a", "b"}) == hashValue([]any{"b", "a"}) {
		t.Error("list order must matter")
	}
}
