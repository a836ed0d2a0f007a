package delivery

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// An attempt that outlives its timeout ends as a context with that deadline would.
func TestAnAttemptPastItsTimeout(t *testing.T) {
	g := newG(t)
	var c attemptClock
	defer c.stop()
	start := time.Now()
	ctx := c.begin(t.Context(), 50*time.Millisecond)
	deadline, ok := ctx.Deadline()
	g.Expect(ok).To(BeTrue())
	g.Expect(deadline).To(BeTemporally("~", start.Add(50*time.Millisecond), 50*time.Millisecond))

	g.Eventually(ctx.Done()).Should(BeClosed())
	g.Expect(ctx.Err()).To(MatchError(context.DeadlineExceeded))
	g.Expect(errors.Is(ctx.Err(), context.DeadlineExceeded)).To(BeTrue())
	c.end()

	next := c.begin(t.Context(), time.Minute)
	g.Expect(next.Err()).NotTo(HaveOccurred(), "the attempt after a timed-out one has its own time")
	c.end()
}

// A timer that fires for an earlier attempt, late, leaves a later attempt running.
func TestALateTimerLeavesTheNextAttempt(t *testing.T) {
	g := newG(t)
	now := time.Unix(1000, 0)
	c := attemptClock{now: func() time.Time { return now }}
	defer c.stop()
	c.begin(t.Context(), time.Minute)
	c.end()
	ctx := c.begin(t.Context(), time.Minute)

	now = now.Add(30 * time.Second)
	c.expire() // the first attempt's timer, firing after the second began
	g.Expect(ctx.Err()).NotTo(HaveOccurred())

	now = now.Add(31 * time.Second)
	c.expire()
	g.Expect(ctx.Err()).To(MatchError(context.DeadlineExceeded), "the second attempt's own time is up")
}

// Stopping the pipeline cancels the running attempt; a worker's clock that stops lets its
// context go.
func TestAnAttemptEndsWithItsPipelineAndWorker(t *testing.T) {
	g := newG(t)
	var c attemptClock
	parent, cancel := context.WithCancel(t.Context())
	ctx := c.begin(parent, time.Minute)
	cancel()
	g.Expect(ctx.Err()).To(MatchError(context.Canceled))
	c.end()

	ctx = c.begin(t.Context(), time.Minute)
	c.end()
	c.stop()
	g.Expect(ctx.Err()).To(MatchError(context.Canceled))
}
