// Package deploy holds berth's packaging: deploy/Dockerfile, the compose
// file deploy/compose.yaml (with its setup script compose-init.sh) and the
// Kubernetes manifests in deploy/k8s. It has no code; its tests check the
// files against the berth binary: every subcommand and flag they pass
// exists, the grace periods outlast the drains, and every manifest decodes
// strictly into Kubernetes' API types (docs/deploy.md).
package deploy
