package controller

import (
	"testing"
	"time"
)

func TestPacerSpacesCounterWritesOverAllSubscriptions(t *testing.T) {
	start := time.Unix(1000, 0)
	const wait = 2 * time.Second
	type ask struct {
		after time.Duration // since start
		want  time.Duration
	}
	cases := []struct {
		name string
		rate float64
		asks []ask
	}{
		{"no bound: every wait is the interval", 0, []ask{{0, wait}, {0, wait}, {0, wait}}},
		{"asked at once: spaced by the rate", 10, []ask{{0, wait}, {0, wait + 100*time.Millisecond},
			{0, wait + 200*time.Millisecond}}},
		{"asked apart: no debt builds up", 10, []ask{{0, wait}, {time.Second, wait}, {5 * time.Second, wait}}},
		{"asked just after: the rest of the spacing", 10, []ask{{0, wait}, {40 * time.Millisecond, wait + 60*time.Millisecond}}},
		{"a slow rate pushes past the interval", 0.25, []ask{{0, wait}, {0, 6 * time.Second},
			{time.Second, 9 * time.Second}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(tc.rate)
			for i, a := range tc.asks {
				if got := p.delay(start.Add(a.after), wait); got != a.want {
					t.Errorf("ask %d at +%s: delay %s, want %s", i, a.after, got, a.want)
				}
			}
		})
	}
}

func TestPacerSpreadsAHundredBusySubscriptions(t *testing.T) {
	p := newPacer(10)
	now := time.Unix(1000, 0)
	var last time.Duration
	for range 100 {
		last = p.delay(now, 2*time.Second)
	}
	// The hundredth of a hundred asked at once: 2 s, then 99 spacings of 100 ms.
	if want := 2*time.Second + 99*100*time.Millisecond; last != want {
		t.Errorf("the hundredth waits %s, want %s", last, want)
	}
}
