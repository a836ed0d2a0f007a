package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// WatchSinkSpec is one sink, with the delivery settings and payload its subscriptions get
// when they set none, for subscriptions to name instead of writing it out. The embedded
// Sink's rule (exactly one member) applies to it.
// +kubebuilder:validation:MinProperties=1
type WatchSinkSpec struct {
	Sink `json:",inline"`

	// delivery are defaults for the subscriptions using this sink: each field a
	// subscription sets itself wins.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`

	// payload is the payload of the subscriptions using this sink that set none, for
	// example a template that writes the message the service expects.
	// +optional
	Payload *PayloadSpec `json:"payload,omitempty"`
}

// ClusterWatchSinkSpec is a sink the platform team owns and offers to the namespaces its
// namespaceSelector admits. Its Secrets live in the operator's namespace: the subscriptions
// using it never see them.
type ClusterWatchSinkSpec struct {
	WatchSinkSpec `json:",inline"`

	// namespaceSelector admits the namespaces whose subscriptions may use this sink, by
	// their labels; {} admits every namespace.
	// +required
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// WatchSinkStatus is what the operator observed of a sink and the subscriptions using it.
type WatchSinkStatus struct {
	// conditions are Ready, whether the sink can be used (its Secrets exist and hold what it
	// needs), and Delivering, whether the subscriptions using it get their events through
	// (Unknown while none uses it).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=0
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the status describes.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// subscriptionCount is how many subscriptions use the sink.
	// +optional
	SubscriptionCount int32 `json:"subscriptionCount,omitempty"`

	// subscriptions lists the subscriptions using the sink as namespace/name, sorted, at
	// most 20.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=0
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MinLength=3
	// +kubebuilder:validation:items:MaxLength=317
	Subscriptions []string `json:"subscriptions,omitempty"`

	// eventsDelivered adds up the events delivered by those subscriptions.
	// +optional
	EventsDelivered int64 `json:"eventsDelivered,omitempty"`

	// eventsFailed adds up the events those subscriptions could not deliver.
	// +optional
	EventsFailed int64 `json:"eventsFailed,omitempty"`

	// lastDeliveryTime is the latest delivery of any of them.
	// +optional
	LastDeliveryTime *metav1.Time `json:"lastDeliveryTime,omitempty"`
}

// Conditions of sink objects, beside Ready.
const (
	// ConditionDelivering: True while every subscription using the sink delivers, False
	// when some cannot (the message names them), Unknown while none uses it.
	ConditionDelivering = "Delivering"
)

// Reasons of sink objects' conditions.
const (
	// SinkReasonValid (Ready=True): the sink's Secrets exist and hold what it needs.
	SinkReasonValid = "Valid"
	// SinkReasonDelivering (Delivering=True): every subscription using the sink delivers.
	SinkReasonDelivering = "Delivering"
	// SinkReasonUnused (Delivering=Unknown): no subscription uses the sink.
	SinkReasonUnused = "Unused"
	// SinkReasonFailing (Delivering=False): some subscriptions using the sink fail to deliver.
	SinkReasonFailing = "DeliveryFailing"
)

// WatchSink is a sink that the subscriptions of its namespace name with
// spec.sinkRef, so its address, credentials and defaults are written once.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wsink,categories=notifier
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Delivering",type=string,JSONPath=`.status.conditions[?(@.type=="Delivering")].status`
// +kubebuilder:printcolumn:name="Subscriptions",type=integer,JSONPath=`.status.subscriptionCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Delivering")].message`
type WatchSink struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the sink and its defaults.
	// +required
	Spec WatchSinkSpec `json:"spec,omitzero"`

	// status is what the operator observed.
	// +optional
	Status WatchSinkStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// WatchSinkList contains a list of WatchSink.
type WatchSinkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []WatchSink `json:"items"`
}

// ClusterWatchSink is a sink the platform team offers to the namespaces it admits;
// subscriptions name it with spec.sinkRef {kind: ClusterWatchSink}.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cwsink,categories=notifier
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Delivering",type=string,JSONPath=`.status.conditions[?(@.type=="Delivering")].status`
// +kubebuilder:printcolumn:name="Subscriptions",type=integer,JSONPath=`.status.subscriptionCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Delivering")].message`
type ClusterWatchSink struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the sink, its defaults and who may use it.
	// +required
	Spec ClusterWatchSinkSpec `json:"spec,omitzero"`

	// status is what the operator observed.
	// +optional
	Status WatchSinkStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// ClusterWatchSinkList contains a list of ClusterWatchSink.
type ClusterWatchSinkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []ClusterWatchSink `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(SchemeGroupVersion, &WatchSink{}, &WatchSinkList{}, &ClusterWatchSink{}, &ClusterWatchSinkList{})
		return nil
	})
}
