package delivery

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are a subscription's counters. They outlive pipelines: a spec change rebuilds the
// pipeline but keeps counting.
type Stats struct {
	observed, delivered, failed, dropped, deadLettered, evicted, coalesced atomic.Int64

	mu               sync.Mutex
	lastEventTime    time.Time
	lastDeliveryTime time.Time
	lastDropTime     time.Time
	lastError        string
	failing          bool
}

// NewStats starts counting from the values a status already reports (after a restart).
func NewStats(from Snapshot) *Stats {
	s := &Stats{}
	s.observed.Store(from.Observed)
	s.delivered.Store(from.Delivered)
	s.failed.Store(from.Failed)
	s.dropped.Store(from.Dropped)
	s.coalesced.Store(from.Coalesced)
	return s
}

// Snapshot is a consistent copy of the counters for status.
type Snapshot struct {
	Observed, Delivered, Failed, Dropped, DeadLettered int64
	// Evicted counts the dropped events (in Dropped too) that went to keep the process's
	// memory budget, not for a full queue.
	Evicted int64
	// Coalesced counts the changes merged into a later event of the same object (see
	// holding), which were not sent on their own.
	Coalesced                                     int64
	LastEventTime, LastDeliveryTime, LastDropTime time.Time
	// Failing is true while the last attempt failed and none has succeeded since.
	Failing   bool
	LastError string
}

// DroppedRecently tells whether the queue overflowed within the last minute, and how
// long until that stops being recent.
func (s Snapshot) DroppedRecently(now time.Time) (bool, time.Duration) {
	if s.LastDropTime.IsZero() {
		return false, 0
	}
	left := droppedRecentlyWait - now.Sub(s.LastDropTime)
	return left > 0, left
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{
		Observed: s.observed.Load(), Delivered: s.delivered.Load(), Failed: s.failed.Load(),
		Dropped: s.dropped.Load(), DeadLettered: s.deadLettered.Load(), Evicted: s.evicted.Load(),
		Coalesced:     s.coalesced.Load(),
		LastEventTime: s.lastEventTime, LastDeliveryTime: s.lastDeliveryTime, LastDropTime: s.lastDropTime,
		Failing: s.failing, LastError: s.lastError,
	}
}

// Observed counts a change queued for the subscription (or dropped at once).
func (s *Stats) Observed() {
	s.observed.Add(1)
	now := time.Now()
	s.mu.Lock()
	s.lastEventTime = now
	s.mu.Unlock()
}

// Dropped counts an event that found no room (evicted: in the memory budget), a failed
// delivery too.
func (s *Stats) Dropped(evicted bool) {
	if evicted {
		s.evicted.Add(1)
	}
	s.dropped.Add(1)
	s.failed.Add(1)
	now := time.Now()
	s.mu.Lock()
	s.lastDropTime = now
	s.mu.Unlock()
}

// Coalesced counts a change merged into a later event of its object.
func (s *Stats) Coalesced() { s.coalesced.Add(1) }

// Failed counts an event that failed for good.
func (s *Stats) Failed() { s.failed.Add(1) }

// DeadLettered counts a failed event the dead-letter sink took.
func (s *Stats) DeadLettered() { s.deadLettered.Add(1) }

// Attempted records one attempt, which delivered n events or failed with err, and tells
// whether the delivery health flipped.
func (s *Stats) Attempted(n int, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.failing
	if err == nil {
		s.delivered.Add(int64(n))
		s.lastDeliveryTime = time.Now()
		s.failing, s.lastError = false, ""
	} else {
		s.failing, s.lastError = true, err.Error()
	}
	return was != s.failing
}
