package kubernetes

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/calipsoplus/calipso/provisioner"
)

// waitingErrors are container waiting reasons that will not resolve by waiting.
var waitingErrors = map[string]bool{
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CrashLoopBackOff":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
}

// imageErrors are the waiting reasons that mean the spec itself cannot run.
var imageErrors = map[string]bool{
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CreateContainerConfigError": true,
}

// podState reports what the pod's phase, conditions and container statuses say.
// reason is set for StateError.
func podState(pod *corev1.Pod) (state provisioner.State, reason string) {
	if pod.DeletionTimestamp != nil {
		return provisioner.StateStopped, ""
	}
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil && waitingErrors[w.Reason] {
			return provisioner.StateError, joinReason(w.Reason, w.Message)
		}
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		if podReady(pod) {
			return provisioner.StateRunning, ""
		}
		return provisioner.StatePending, ""
	case corev1.PodSucceeded:
		return provisioner.StateStopped, ""
	case corev1.PodFailed:
		if pod.Status.Reason != "" || pod.Status.Message != "" {
			return provisioner.StateError, joinReason(pod.Status.Reason, pod.Status.Message)
		}
		for _, cs := range statuses {
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
				return provisioner.StateError, joinReason(t.Reason, "exit code "+strconv.Itoa(int(t.ExitCode)))
			}
		}
		return provisioner.StateError, "Failed"
	case corev1.PodUnknown:
		return provisioner.StateError, joinReason("Unknown", "the pod's node does not report (node lost?)")
	default: // Pending, or no status yet
		return provisioner.StatePending, ""
	}
}

// isImageError says whether an error reason means the image or its config is bad.
func isImageError(reason string) bool {
	r, _, _ := strings.Cut(reason, ":")
	return imageErrors[r]
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func joinReason(reason, message string) string {
	switch {
	case reason == "":
		return message
	case message == "":
		return reason
	default:
		return reason + ": " + message
	}
}
