package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calipsoplus/calipso/provisioner"
)

func waiting(reason, message string) []corev1.ContainerStatus {
	return []corev1.ContainerStatus{{Name: containerName, State: corev1.ContainerState{
		Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}}
}

func TestPodState(t *testing.T) {
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	notReady := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	now := metav1.Now()
	tests := []struct {
		name       string
		status     corev1.PodStatus
		deleting   bool
		want       provisioner.State
		wantReason string
		imageError bool
	}{
		{"no status yet", corev1.PodStatus{}, false, provisioner.StatePending, "", false},
		{"pending", corev1.PodStatus{Phase: corev1.PodPending}, false, provisioner.StatePending, "", false},
		{"pulling", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("ContainerCreating", "")}, false, provisioner.StatePending, "", false},
		{"image pull back-off", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("ImagePullBackOff", "Back-off pulling image")},
			false, provisioner.StateError, "ImagePullBackOff: Back-off pulling image", true},
		{"err image pull", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("ErrImagePull", "")}, false, provisioner.StateError, "ErrImagePull", true},
		{"invalid image name", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("InvalidImageName", "")}, false, provisioner.StateError, "InvalidImageName", true},
		{"config error", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("CreateContainerConfigError", "no user")}, false, provisioner.StateError, "CreateContainerConfigError: no user", true},
		{"crash loop while running", corev1.PodStatus{Phase: corev1.PodRunning, Conditions: notReady, ContainerStatuses: waiting("CrashLoopBackOff", "back-off 5m")},
			false, provisioner.StateError, "CrashLoopBackOff: back-off 5m", false},
		{"running not ready", corev1.PodStatus{Phase: corev1.PodRunning, Conditions: notReady}, false, provisioner.StatePending, "", false},
		{"running no conditions", corev1.PodStatus{Phase: corev1.PodRunning}, false, provisioner.StatePending, "", false},
		{"running ready", corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready}, false, provisioner.StateRunning, "", false},
		{"succeeded", corev1.PodStatus{Phase: corev1.PodSucceeded}, false, provisioner.StateStopped, "", false},
		{"evicted", corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "node low on memory"}, false, provisioner.StateError, "Evicted: node low on memory", false},
		{"failed exit code", corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}}, false, provisioner.StateError, "OOMKilled: exit code 137", false},
		{"unknown", corev1.PodStatus{Phase: corev1.PodUnknown}, false, provisioner.StateError, "Unknown", false},
		{"terminating", corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready}, true, provisioner.StateStopped, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Status: tt.status}
			if tt.deleting {
				pod.DeletionTimestamp = &now
			}
			state, reason := podState(pod)
			if state != tt.want || !strings.HasPrefix(reason, tt.wantReason) || (tt.wantReason == "") != (reason == "") {
				t.Errorf("podState = %s %q, want %s %q", state, reason, tt.want, tt.wantReason)
			}
			if got := isImageError(reason); got != tt.imageError {
				t.Errorf("isImageError(%q) = %v, want %v", reason, got, tt.imageError)
			}
		})
	}
}
