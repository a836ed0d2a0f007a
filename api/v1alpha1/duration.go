package v1alpha1

import (
	"fmt"
	"time"
)

// Duration is a length of time as Go writes it: "10s", "1m30s", "500ms". The schema keeps it
// short enough (each number at most six digits, twenty characters in all) that it always
// parses.
//
// It is a string rather than metav1.Duration on purpose: an object stored under an older,
// looser schema may hold a value that does not parse ("9999999h"), and metav1.Duration fails
// to decode it, which fails the list of every WatchSubscription and stops the operator for
// everyone. A string always decodes; Parse then reports the one bad subscription.
//
// The CEL rules on each Duration field match the pattern before they call duration(): a
// value that does not parse then fails the rule instead of making it error, which the API
// server can ratchet, so an object stored before keeps accepting status writes.
// +kubebuilder:validation:MinLength=2
// +kubebuilder:validation:MaxLength=20
// +kubebuilder:validation:Pattern=`^([0-9]{1,6}(\.[0-9]{1,9})?(ms|s|m|h))+$`
type Duration string

// Parse returns the duration, or an error naming the value when it is not one.
func (d Duration) Parse() (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"10s\" or \"1m30s\"", string(d))
	}
	return v, nil
}

// DurationOf writes d as a Duration.
func DurationOf(d time.Duration) *Duration {
	s := Duration(d.String())
	return &s
}
