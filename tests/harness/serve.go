package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Controllers run by kube-controller-manager: the ones a real cluster has and
// envtest lacks that matter without nodes (garbage collection, namespace
// deletion, service accounts and their tokens, the root CA ConfigMap, the
// aggregated admin/edit/view roles, quota, and ValidatingAdmissionPolicy
// type-checking status).
const defaultControllers = "garbage-collector-controller,namespace-controller," +
	"serviceaccount-controller,serviceaccount-token-controller," +
	"root-ca-certificate-publisher-controller,clusterrole-aggregation-controller," +
	"resourcequota-controller,validatingadmissionpolicy-status-controller"

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// runServe supervises etcd, kube-apiserver and kube-controller-manager as
// child processes of this same binary. The state directory must already hold
// tokens.csv and controller-manager.kubeconfig (controlplane.py writes them);
// pki/ is generated when missing. When everything is up it writes
// <state-dir>/ready; on SIGTERM/SIGINT it stops the children in reverse order.
func runServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "state directory (pki, tokens, etcd data)")
	logDir := fs.String("log-dir", "", "directory for etcd.log, kube-apiserver.log, kube-controller-manager.log (default: state dir)")
	apiPort := fs.Int("apiserver-port", 0, "kube-apiserver secure port on 127.0.0.1")
	etcdPort := fs.Int("etcd-client-port", 0, "etcd client port on 127.0.0.1")
	peerPort := fs.Int("etcd-peer-port", 0, "etcd peer port on 127.0.0.1")
	controllers := fs.String("controllers", defaultControllers, "kube-controller-manager --controllers")
	verbosity := fs.Int("v", 1, "klog verbosity of apiserver and controller-manager")
	detach := fs.Bool("detach", false, "start the supervisor in a new session in the background and return")
	pidFile := fs.String("pid-file", "", "with --detach: write the supervisor's pid here")
	var apiExtra, kcmExtra multiFlag
	fs.Var(&apiExtra, "apiserver-arg", "extra kube-apiserver flag (repeatable)")
	fs.Var(&kcmExtra, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *stateDir == "" || *apiPort == 0 || *etcdPort == 0 || *peerPort == 0 {
		fmt.Fprintln(os.Stderr, "serve: --state-dir, --apiserver-port, --etcd-client-port and --etcd-peer-port are required")
		return 2
	}
	if *logDir == "" {
		*logDir = *stateDir
	}
	logger := log.New(os.Stderr, "serve: ", log.LstdFlags|log.Lmicroseconds)
	if *detach {
		return detachServe(logger, args, *pidFile)
	}

	// Children get Pdeathsig, which fires when the *thread* that forked them
	// exits: keep every fork on this one locked thread.
	runtime.LockOSThread()

	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	state := abs(*stateDir)
	logs := abs(*logDir)
	pkiDir := filepath.Join(state, "pki")
	tokens := filepath.Join(state, "tokens.csv")
	kcmKubeconfig := filepath.Join(state, "controller-manager.kubeconfig")
	readyMarker := filepath.Join(state, "ready")
	_ = os.Remove(readyMarker)
	for _, p := range []string{tokens, kcmKubeconfig} {
		if _, err := os.Stat(p); err != nil {
			logger.Printf("missing %s: %v", p, err)
			return 2
		}
	}
	if err := generatePKI(pkiDir, false); err != nil {
		logger.Printf("pki: %v", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		logger.Printf("cannot find own executable: %v", err)
		return 1
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP)

	start := func(name string, argv ...string) (*child, error) {
		f, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd := exec.Command(self, append([]string{name}, argv...)...)
		cmd.Stdout, cmd.Stderr = f, f
		cmd.Dir = state
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		c := &child{name: name, cmd: cmd, done: make(chan struct{})}
		go func() { c.err = cmd.Wait(); close(c.done) }()
		logger.Printf("started %s (pid %d)", name, cmd.Process.Pid)
		return c, nil
	}
	var running []*child
	stopAll := func() {
		for i := len(running) - 1; i >= 0; i-- {
			stopChild(logger, running[i], 30*time.Second)
		}
		_ = os.Remove(readyMarker)
	}
	// waitFor polls check until it succeeds, a child dies or a signal arrives.
	waitFor := func(what string, timeout time.Duration, check func() error) error {
		deadline := time.Now().Add(timeout)
		var last error
		for {
			if last = check(); last == nil {
				logger.Printf("%s ok", what)
				return nil
			}
			for _, c := range running {
				select {
				case <-c.done:
					return fmt.Errorf("%s exited while waiting for %s: %v", c.name, what, c.err)
				default:
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ok after %s: %v", what, timeout, last)
			}
			select {
			case s := <-sigs:
				return fmt.Errorf("%v while waiting for %s", s, what)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	fail := func(err error) int {
		logger.Print(err)
		stopAll()
		return 1
	}

	etcd, err := start("etcd",
		"--data-dir", filepath.Join(state, "etcd"),
		"--client-port", fmt.Sprint(*etcdPort),
		"--peer-port", fmt.Sprint(*peerPort))
	if err != nil {
		return fail(err)
	}
	running = append(running, etcd)
	plain := &http.Client{Timeout: 2 * time.Second}
	if err := waitFor("etcd /health", 120*time.Second, func() error {
		return getOK(plain, fmt.Sprintf("http://127.0.0.1:%d/health", *etcdPort), `"health":"true"`)
	}); err != nil {
		return fail(err)
	}

	issuer := "https://kubernetes.default.svc.cluster.local"
	apiArgs := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", *etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", *apiPort),
		"--tls-cert-file=" + filepath.Join(pkiDir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(pkiDir, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(pkiDir, "ca.crt"),
		"--cert-dir=" + filepath.Join(state, "apiserver-certs"),
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=" + issuer,
		"--api-audiences=" + issuer,
		"--service-account-key-file=" + filepath.Join(pkiDir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pkiDir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		// No nodes, no pod network: nothing could reach an Endpoints entry
		// for 127.0.0.1, which validation refuses anyway.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		fmt.Sprintf("--v=%d", *verbosity),
	}
	api, err := start("kube-apiserver", append(apiArgs, apiExtra...)...)
	if err != nil {
		return fail(err)
	}
	running = append(running, api)
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return fail(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tlsClient := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	if err := waitFor("kube-apiserver /readyz", 300*time.Second, func() error {
		return getOK(tlsClient, fmt.Sprintf("https://127.0.0.1:%d/readyz", *apiPort), "ok")
	}); err != nil {
		return fail(err)
	}

	kcmArgs := []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + filepath.Join(pkiDir, "sa.key"),
		"--root-ca-file=" + filepath.Join(pkiDir, "ca.crt"),
		"--controllers=" + *controllers,
		fmt.Sprintf("--v=%d", *verbosity),
	}
	kcmArgs = append(kcmArgs, kcmExtra...)
	kcm, err := start("kube-controller-manager", kcmArgs...)
	if err != nil {
		return fail(err)
	}
	running = append(running, kcm)

	if err := writeFileAtomic(readyMarker, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return fail(err)
	}
	logger.Printf("control plane ready: https://127.0.0.1:%d", *apiPort)

	restarts := 0
	for {
		select {
		case s := <-sigs:
			logger.Printf("%v: stopping", s)
			stopAll()
			return 0
		case <-etcd.done:
			return fail(fmt.Errorf("etcd exited: %v", etcd.err))
		case <-api.done:
			return fail(fmt.Errorf("kube-apiserver exited: %v", api.err))
		case <-kcm.done:
			restarts++
			logger.Printf("kube-controller-manager exited (%v); restart %d in 2s", kcm.err, restarts)
			select {
			case s := <-sigs:
				logger.Printf("%v: stopping", s)
				stopAll()
				return 0
			case <-time.After(2 * time.Second):
			}
			next, err := start("kube-controller-manager", kcmArgs...)
			if err != nil {
				return fail(err)
			}
			running[len(running)-1] = next
			kcm = next
		}
	}
}

func stopChild(logger *log.Logger, c *child, grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		logger.Printf("%s stopped", c.name)
	case <-time.After(grace):
		logger.Printf("%s did not stop in %s: killing", c.name, grace)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func getOK(client *http.Client, url, want string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if !strings.Contains(string(body), want) {
		return errors.New(url + ": unexpected body: " + strings.TrimSpace(string(body)))
	}
	return nil
}

// detachServe re-runs "serve" without --detach in a new session, with this
// process's stdout/stderr, writes its pid to pidFile and returns at once, so
// that the caller (a make target, a pytest session) need not be its parent.
func detachServe(logger *log.Logger, args []string, pidFile string) int {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--detach" || a == "-detach" || strings.HasPrefix(a, "--detach=") || strings.HasPrefix(a, "-detach="):
		case a == "--pid-file" || a == "-pid-file":
			i++
		case strings.HasPrefix(a, "--pid-file=") || strings.HasPrefix(a, "-pid-file="):
		default:
			rest = append(rest, a)
		}
	}
	self, err := os.Executable()
	if err != nil {
		logger.Print(err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"serve"}, rest...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logger.Print(err)
		return 1
	}
	if pidFile != "" {
		if err := writeFileAtomic(pidFile, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644); err != nil {
			logger.Print(err)
			_ = cmd.Process.Kill()
			return 1
		}
	}
	logger.Printf("detached supervisor pid %d", cmd.Process.Pid)
	_ = cmd.Process.Release()
	return 0
}
