package authz

import (
	"errors"
	"testing"
	"time"
)

func TestARevocationIsConfirmedBeforeItCounts(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	deny := &DeniedError{ServiceAccount: "team-a/default", Verb: "list"}
	allowed := answer{at: t0}
	cases := []struct {
		name     string
		prev     answer
		known    bool
		result   error
		now      time.Time
		wantTold string // "allowed", "denied", "unconfirmed"
	}{
		{"a first denial counts: nothing ran on a grant", answer{}, false, deny, t0, "denied"},
		{"a denial after a denial counts", answer{err: deny, at: t0}, true, deny, t0.Add(time.Minute), "denied"},
		{"a grant counts", answer{err: deny, at: t0}, true, nil, t0.Add(time.Minute), "allowed"},
		{"a grant denied for the first time is not believed yet", allowed, true, deny, t0.Add(time.Minute), "unconfirmed"},
		{"nor again before ConfirmRevocation", answer{at: t0, deniedSince: t0.Add(time.Minute)}, true, deny,
			t0.Add(time.Minute + ConfirmRevocation/2), "unconfirmed"},
		{"confirmed after it", answer{at: t0, deniedSince: t0.Add(time.Minute)}, true, deny,
			t0.Add(time.Minute + ConfirmRevocation), "denied"},
		{"allowed again: the denial was the API server starting", answer{at: t0, deniedSince: t0.Add(time.Minute)}, true, nil,
			t0.Add(time.Minute + ConfirmRevocation), "allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept, told := decide(tc.prev, tc.known, tc.result, tc.now)
			got := "allowed"
			var unconfirmed *UnconfirmedDenialError
			switch {
			case errors.As(told, &unconfirmed):
				got = "unconfirmed"
				if kept.err != nil || kept.deniedSince.IsZero() {
					t.Errorf("kept %+v: the grant must stand while the denial is confirmed", kept)
				}
			case told != nil:
				got = "denied"
				if kept.err == nil {
					t.Errorf("kept %+v: a confirmed denial is kept", kept)
				}
			}
			if got != tc.wantTold {
				t.Errorf("told %v (%s), want %s", told, got, tc.wantTold)
			}
		})
	}
}
