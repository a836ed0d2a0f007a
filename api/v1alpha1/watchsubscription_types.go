/*
Copyright 2026.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// WatchSubscriptionSpec says which objects to watch, which of their changes matter and where
// to send them.
// +kubebuilder:validation:XValidation:rule="!has(self.namespaces) || !('*' in self.namespaces) || size(self.namespaces) == 1",message="namespaces: \"*\" cannot be combined with other namespaces",fieldPath=".namespaces"
type WatchSubscriptionSpec struct {
	// resource names the objects to watch by group, version and resource, as in a GVR.
	// Any built-in type or custom resource works, including a CRD installed later.
	// +required
	Resource ResourceRef `json:"resource"`

	// namespaces to watch. Empty means the subscription's own namespace; ["*"] means all
	// namespaces. Ignored for cluster-scoped resources.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Namespaces []NamespaceName `json:"namespaces,omitempty"`

	// selector filters objects by label, with the usual matchLabels / matchExpressions.
	// Empty or absent matches every object.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="selector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))",message="selector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// fieldSelector filters objects by field, as in `kubectl get --field-selector`, for
	// example "metadata.name=settings" or "status.phase!=Running". Any dotted path of the
	// object may be used; = , == and != are supported.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	FieldSelector string `json:"fieldSelector,omitempty"`

	// eventTypes to deliver. Empty means all of Added, Updated and Deleted.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=3
	EventTypes []EventType `json:"eventTypes,omitempty"`

	// sendInitialEvents, when true, delivers every object that already exists when the
	// subscription starts watching as Added. When false (the default) only later changes
	// are delivered.
	// +optional
	SendInitialEvents bool `json:"sendInitialEvents,omitempty"`

	// suspend stops delivery without deleting the subscription. Changes made while
	// suspended are not delivered later.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// sink is where events go. Exactly one member must be set.
	// +required
	Sink Sink `json:"sink"`

	// delivery tunes timeouts, retries and queueing. Reserved: no fields yet.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`
}

// ResourceRef identifies a resource by group, version and resource.
type ResourceRef struct {
	// group of the resource, empty for the core group (ConfigMaps, Pods, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Group string `json:"group,omitempty"`

	// version of the resource, such as "v1" or "v1beta1".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Version string `json:"version"`

	// resource is the lower-case plural name, such as "configmaps" or "deployments".
	// A subresource ("pods/log") is accepted here but cannot be watched.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`
	Resource string `json:"resource"`
}

// NamespaceName is a namespace name (a DNS-1123 label) or "*" for all namespaces.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
type NamespaceName string

// AllNamespaces is the namespaces entry that selects every namespace.
const AllNamespaces NamespaceName = "*"

// EventType is a kind of change to an object.
// +kubebuilder:validation:Enum=Added;Updated;Deleted
type EventType string

const (
	EventAdded   EventType = "Added"
	EventUpdated EventType = "Updated"
	EventDeleted EventType = "Deleted"
)

// Sink is where events are delivered. Exactly one member is set.
// +kubebuilder:validation:XValidation:rule="[has(self.webhook), has(self.log)].filter(x, x).size() == 1",message="sink: exactly one of webhook or log must be set"
type Sink struct {
	// webhook delivers each event as a CloudEvent over HTTP.
	// +optional
	Webhook *WebhookSink `json:"webhook,omitempty"`

	// log writes each event as one structured line to the operator's log, for debugging.
	// +optional
	Log *LogSink `json:"log,omitempty"`
}

// WebhookSink posts CloudEvents (HTTP binary content mode) to a URL.
type WebhookSink struct {
	// url is the absolute http or https URL events are posted to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="sink.webhook.url must be an absolute http or https URL with a host"
	URL string `json:"url"`
}

// LogSink writes events to the operator's log. It has no settings.
type LogSink struct{}

// DeliverySpec is reserved for delivery tuning (timeouts, retries, queues).
type DeliverySpec struct{}

// WatchSubscriptionStatus is what the operator observed and did for a subscription.
type WatchSubscriptionStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions hold the Ready condition: True while watching, Unknown while starting,
	// False with a reason when something is wrong.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// resource is the watched resource as group/version/resource, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Resource string `json:"resource,omitempty"`

	// sink is the kind of sink in use (webhook or log), for display.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Sink string `json:"sink,omitempty"`

	// kind the resource resolved to through discovery.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Kind string `json:"kind,omitempty"`

	// namespaced tells whether the resource is namespaced.
	// +optional
	Namespaced *bool `json:"namespaced,omitempty"`

	// eventsObserved counts the changes that matched this subscription since it was created.
	// +optional
	EventsObserved int64 `json:"eventsObserved,omitempty"`

	// eventsDelivered counts the events the sink accepted.
	// +optional
	EventsDelivered int64 `json:"eventsDelivered,omitempty"`

	// eventsFailed counts the events that could not be delivered.
	// +optional
	EventsFailed int64 `json:"eventsFailed,omitempty"`

	// lastEventTime is when the last matching change was observed.
	// +optional
	LastEventTime *metav1.Time `json:"lastEventTime,omitempty"`

	// lastDeliveryTime is when the sink last accepted an event.
	// +optional
	LastDeliveryTime *metav1.Time `json:"lastDeliveryTime,omitempty"`
}

// WatchSubscription tells the operator to watch a Kubernetes resource and deliver its
// changes to a sink as CloudEvents.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wsub,categories=notifier
// +kubebuilder:printcolumn:name="Resource",type=string,JSONPath=`.status.resource`
// +kubebuilder:printcolumn:name="Sink",type=string,JSONPath=`.status.sink`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type WatchSubscription struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec says what to watch and where to deliver.
	// +required
	Spec WatchSubscriptionSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status WatchSubscriptionStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// WatchSubscriptionList contains a list of WatchSubscription.
type WatchSubscriptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []WatchSubscription `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(SchemeGroupVersion, &WatchSubscription{}, &WatchSubscriptionList{})
		return nil
	})
}
