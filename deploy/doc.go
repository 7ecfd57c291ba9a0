// Package deploy holds no code: its tests prove the deployment files next to it
// (Apache, container image, Kubernetes manifests) against the real programs.
package deploy
