package deploy

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// The manifests are checked offline, without a cluster or downloaded JSON
// schemas: every document is decoded by the API machinery's strict
// deserializer into the typed objects of k8s.io/api, which refuses unknown
// kinds, unknown or duplicated fields and values of the wrong type; then
// the tests below check what types cannot (selectors, ports, names,
// security settings).

// decoder returns a strict deserializer for the kinds the manifests may
// use.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// object is a decoded manifest.
type object struct {
	manifest
	obj runtime.Object
}

// meta returns the object's metadata.
func (o object) meta() metav1.Object { return o.obj.(metav1.Object) }

// String names the object for messages.
func (o object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.obj.GetObjectKind().GroupVersionKind().Kind, o.meta().GetNamespace(), o.meta().GetName(), o.file)
}

// decodeManifests decodes every manifest strictly; a document that does
// not decode fails the test.
func decodeManifests(t *testing.T) []object {
	t.Helper()
	dec := decoder(t)
	var out []object
	for _, m := range readManifests(t) {
		obj, _, err := dec.Decode(m.doc, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", m.file, err)
			continue
		}
		out = append(out, object{manifest: m, obj: obj})
	}
	return out
}

// workload is a Deployment's or StatefulSet's pods.
type workload struct {
	object
	selector *metav1.LabelSelector
	pod      corev1.PodTemplateSpec
}

// workloads returns the objects that run pods.
func workloads(objs []object) []workload {
	var out []workload
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{o, w.Spec.Selector, w.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, workload{o, w.Spec.Selector, w.Spec.Template})
		}
	}
	return out
}

// selects reports whether sel selects the workload's pods.
func (w workload) selects(sel labels.Selector) bool {
	return !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels))
}

// containerPorts returns the named ports of the workload's containers.
func (w workload) containerPorts() map[string]int32 {
	out := map[string]int32{}
	for _, c := range w.pod.Spec.Containers {
		for _, p := range c.Ports {
			out[p.Name] = p.ContainerPort
		}
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := decodeManifests(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.obj.GetObjectKind().GroupVersionKind().Kind]++
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "PodDisruptionBudget"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in deploy/k8s (kinds: %v)", k, kinds)
		}
	}
}

// TestStrictDecoderRefuses shows that the check above can fail: the
// decoder refuses what a typo or a wrong type makes.
func TestStrictDecoderRefuses(t *testing.T) {
	dec := decoder(t)
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIp: None}\n",
		"wrong type":    "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec: {replicas: two}\n",
		"duplicate":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: a, k: b}\n",
		"unknown kind":  "apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n",
		"nested typo":   "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i, securityContext: {readOnlyRootFileSystem: true}}]}\n",
	} {
		if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
}

func TestManifestsHangTogether(t *testing.T) {
	objs := decodeManifests(t)
	ws := workloads(objs)
	namespaces := map[string]bool{}
	services := map[string]*corev1.Service{}
	configMaps := map[string]bool{}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Namespace:
			namespaces[v.Name] = true
		case *corev1.Service:
			services[v.Name] = v
		case *corev1.ConfigMap:
			configMaps[v.Name] = true
		}
	}
	for _, o := range objs {
		if _, ok := o.obj.(*corev1.Namespace); ok {
			continue
		}
		if ns := o.meta().GetNamespace(); !namespaces[ns] {
			t.Errorf("%s: namespace %q is not one of the manifests' Namespaces %v", o, ns, names(namespaces))
		}
	}
	for _, w := range ws {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || !w.selects(sel) {
			t.Errorf("%s: its selector %v does not select its own pod template's labels %v (%v)", w, w.selector, w.pod.Labels, err)
		}
		if s, ok := w.obj.(*appsv1.StatefulSet); ok {
			svc := services[s.Spec.ServiceName]
			switch {
			case svc == nil:
				t.Errorf("%s: serviceName %q is not a Service of the manifests", w, s.Spec.ServiceName)
			case svc.Spec.ClusterIP != corev1.ClusterIPNone:
				t.Errorf("%s: its Service %s is not headless (clusterIP %q): pods get no stable DNS names", w, svc.Name, svc.Spec.ClusterIP)
			case !svc.Spec.PublishNotReadyAddresses:
				t.Errorf("%s: its Service %s does not publish not-ready addresses: an executor's advertised name would not resolve until it is ready", w, svc.Name)
			}
		}
		checkPodSecurity(t, w)
		checkProbes(t, w)
	}
	for _, svc := range services {
		var chosen []workload
		for _, w := range ws {
			if w.selects(labels.SelectorFromSet(svc.Spec.Selector)) {
				chosen = append(chosen, w)
			}
		}
		if len(chosen) == 0 {
			t.Errorf("Service %s: its selector %v selects no workload", svc.Name, svc.Spec.Selector)
		}
		for _, p := range svc.Spec.Ports {
			for _, w := range chosen {
				if name := p.TargetPort.StrVal; name != "" {
					if _, ok := w.containerPorts()[name]; !ok {
						t.Errorf("Service %s: targetPort %q is not a container port of %s", svc.Name, name, w)
					}
				}
			}
		}
	}
	pdbs := 0
	for _, o := range objs {
		pdb, ok := o.obj.(*policyv1.PodDisruptionBudget)
		if !ok {
			continue
		}
		pdbs++
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		n := 0
		for _, w := range ws {
			if err == nil && w.selects(sel) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: its selector selects no workload", o)
		}
		if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Errorf("%s: want exactly one of minAvailable and maxUnavailable", o)
		}
	}
	for _, w := range ws {
		covered := false
		for _, o := range objs {
			if pdb, ok := o.obj.(*policyv1.PodDisruptionBudget); ok {
				sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				covered = covered || (err == nil && w.selects(sel))
			}
		}
		if !covered {
			t.Errorf("%s: no PodDisruptionBudget covers it", w)
		}
	}
	checkReferences(t, ws, configMaps)
}

// checkPodSecurity wants every pod held to the restricted Pod Security
// Standard and more: non-root, read-only root filesystem, no capability.
func checkPodSecurity(t *testing.T, w workload) {
	t.Helper()
	ps := w.pod.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: want the pod's securityContext with runAsNonRoot and seccompProfile RuntimeDefault", w)
	}
	if ps != nil && ps.RunAsUser != nil && *ps.RunAsUser == 0 {
		t.Errorf("%s: runAsUser 0", w)
	}
	if a := w.pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("%s: want automountServiceAccountToken false: berth never calls the Kubernetes API", w)
	}
	for _, c := range append(append([]corev1.Container{}, w.pod.Spec.InitContainers...), w.pod.Spec.Containers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s container %s: no securityContext", w, c.Name)
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("%s container %s: want runAsNonRoot", w, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s container %s: want readOnlyRootFilesystem", w, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s container %s: want allowPrivilegeEscalation false", w, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s container %s: privileged", w, c.Name)
		case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s container %s: want capabilities drop [ALL] and none added", w, c.Name)
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") {
			t.Errorf("%s container %s: image %q: name a tag other than latest", w, c.Name, c.Image)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s container %s: want cpu and memory requests and a memory limit", w, c.Name)
		}
	}
}

// checkProbes wants liveness, readiness and startup probes on every
// container, on a port it declares.
func checkProbes(t *testing.T, w workload) {
	t.Helper()
	for _, c := range w.pod.Spec.Containers {
		ports := map[string]bool{}
		nums := map[int32]bool{}
		for _, p := range c.Ports {
			ports[p.Name], nums[p.ContainerPort] = true, true
		}
		for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if p == nil {
				t.Errorf("%s container %s: no %s probe", w, c.Name, kind)
				continue
			}
			switch h := p.ProbeHandler; {
			case h.TCPSocket != nil:
				if port := h.TCPSocket.Port; (port.StrVal != "" && !ports[port.StrVal]) || (port.StrVal == "" && !nums[port.IntVal]) {
					t.Errorf("%s container %s: %s probe on port %s, which the container does not declare", w, c.Name, kind, port.String())
				}
			case h.GRPC != nil:
				if !nums[h.GRPC.Port] {
					t.Errorf("%s container %s: %s probe on port %d, which the container does not declare", w, c.Name, kind, h.GRPC.Port)
				}
			case h.HTTPGet != nil:
				if port := h.HTTPGet.Port; port.StrVal != "" && !ports[port.StrVal] {
					t.Errorf("%s container %s: %s probe on port %s, which the container does not declare", w, c.Name, kind, port.String())
				}
			default:
				t.Errorf("%s container %s: %s probe has no handler berth's image can serve (exec needs a shell or tool it lacks)", w, c.Name, kind)
			}
		}
	}
}

// checkReferences wants every Secret and ConfigMap a pod uses either among
// the manifests or named in docs/deploy.md, which tells how to make it,
// every mounted volume declared, and every $(VAR) of args in the env.
func checkReferences(t *testing.T, ws []workload, configMaps map[string]bool) {
	t.Helper()
	doc := readDoc(t, "../docs/deploy.md")
	for _, w := range ws {
		vols := map[string]bool{}
		for _, v := range w.pod.Spec.Volumes {
			vols[v.Name] = true
			switch {
			case v.Secret != nil && !strings.Contains(doc, v.Secret.SecretName):
				t.Errorf("%s: Secret %s is not in docs/deploy.md, which must say how to make it", w, v.Secret.SecretName)
			case v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] && !strings.Contains(doc, v.ConfigMap.Name):
				t.Errorf("%s: ConfigMap %s is neither among the manifests nor in docs/deploy.md", w, v.ConfigMap.Name)
			}
		}
		for _, c := range w.pod.Spec.Containers {
			env := map[string]bool{}
			for _, e := range c.Env {
				env[e.Name] = true
				if r := e.ValueFrom; r != nil && r.ConfigMapKeyRef != nil && !configMaps[r.ConfigMapKeyRef.Name] {
					t.Errorf("%s container %s: env %s from ConfigMap %s, which is not among the manifests", w, c.Name, e.Name, r.ConfigMapKeyRef.Name)
				}
				if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && !strings.Contains(doc, r.SecretKeyRef.Name) {
					t.Errorf("%s container %s: env %s from Secret %s, which docs/deploy.md does not name", w, c.Name, e.Name, r.SecretKeyRef.Name)
				}
			}
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					t.Errorf("%s container %s: mounts volume %s, which the pod does not declare", w, c.Name, m.Name)
				}
			}
			for _, a := range append(append([]string{}, c.Command...), c.Args...) {
				for _, v := range envRefs(a) {
					if !env[v] {
						t.Errorf("%s container %s: %q uses $(%s), which is not in the container's env (Kubernetes would pass it as written)", w, c.Name, a, v)
					}
				}
			}
		}
	}
}

// envRefs returns the names of the $(VAR) references in s.
func envRefs(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "$(")
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i:], ')')
		if j < 0 {
			return out
		}
		out = append(out, s[i+2:i+j])
		s = s[i+j:]
	}
}
