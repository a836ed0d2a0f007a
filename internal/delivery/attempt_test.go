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

// The timer, armed for an earlier attempt, fires before the running attempt's deadline:
// that attempt keeps running until its own.
func TestATimerArmedForAnEarlierAttempt(t *testing.T) {
	g := newG(t)
	now := time.Unix(1000, 0)
	c := attemptClock{now: func() time.Time { return now }}
	defer c.stop()
	c.begin(t.Context(), time.Minute)
	c.end()
	ctx := c.begin(t.Context(), time.Minute)

	now = now.Add(30 * time.Second)
	c.expire() // at the first attempt's deadline, the second's not yet
	g.Expect(ctx.Err()).NotTo(HaveOccurred())

	now = now.Add(31 * time.Second)
	c.expire()
	g.Expect(ctx.Err()).To(MatchError(context.DeadlineExceeded), "the second attempt's own time is up")
}

// Each attempt gets its whole timeout, though the timer was armed by the one before.
func TestAnAttemptGetsItsWholeTimeout(t *testing.T) {
	g := newG(t)
	var c attemptClock
	defer c.stop()
	const timeout = 100 * time.Millisecond
	c.begin(t.Context(), timeout)
	c.end()
	time.Sleep(timeout / 2) // the next attempt begins while the first one's timer is pending
	begun := time.Now()
	ctx := c.begin(t.Context(), timeout)
	g.Eventually(ctx.Done()).Should(BeClosed())
	g.Expect(time.Since(begun)).To(BeNumerically(">=", timeout), "the attempt was cut short")
	g.Expect(ctx.Err()).To(MatchError(context.DeadlineExceeded))
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
