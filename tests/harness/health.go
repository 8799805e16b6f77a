// The two health judges GitOps tools put on our custom resources, as
// subcommands, so the tests ask the real libraries instead of re-implementing
// their rules:
//
//	kube-harness kstatus          kstatus's Compute (sigs.k8s.io/cli-utils), what
//	                              Flux's health checks and `kubectl wait`-style
//	                              tools use
//	kube-harness lua SCRIPT.lua   an Argo CD health.lua run in gopher-lua the way
//	                              Argo CD runs it (the object as the global `obj`,
//	                              only the base, package and table libraries, a
//	                              one-second limit; the returned table is the verdict)
//	kube-harness flux-cel INPROGRESS FAILED CURRENT
//	                              Flux healthCheckExprs (cel-go): the order Flux
//	                              documents (RFC-0009): a generation not yet observed
//	                              is InProgress; else the first of inProgress, failed,
//	                              current that is true; else InProgress. The object's
//	                              top-level fields are the variables (status, metadata).
//
// Both read one object's JSON (`kubectl get -o json`) on stdin and print one
// JSON line: {"status": ..., "message": ...}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/cel-go/cel"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func readObject() (map[string]interface{}, error) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, err
	}
	// As the API machinery decodes: whole numbers become int64 (kstatus reads
	// metadata.generation as one).
	obj := map[string]interface{}{}
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("stdin is not a JSON object: %w", err)
	}
	return obj, nil
}

func printVerdict(v verdict) int {
	out, _ := json.Marshal(v)
	fmt.Println(string(out))
	return 0
}

// runHealth dispatches the subcommands of this file (one case in main.go).
func runHealth(sub string, args []string) int {
	switch sub {
	case "lua":
		return runLua(args)
	case "flux-cel":
		return runFluxCEL(args)
	}
	return runKstatus(args)
}

func runFluxCEL(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: kube-harness flux-cel INPROGRESS FAILED CURRENT < object.json")
		return 2
	}
	obj, err := readObject()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flux-cel:", err)
		return 1
	}
	u := &unstructured.Unstructured{Object: obj}
	generation, _, _ := unstructured.NestedInt64(obj, "metadata", "generation")
	observed, found, _ := unstructured.NestedInt64(obj, "status", "observedGeneration")
	if found && observed != generation {
		return printVerdict(verdict{Status: "InProgress", Message: "generation not observed"})
	}
	var options []cel.EnvOption
	for _, name := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		options = append(options, cel.Variable(name, cel.DynType))
	}
	env, err := cel.NewEnv(options...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flux-cel:", err)
		return 1
	}
	for i, outcome := range []string{"InProgress", "Failed", "Current"} {
		if args[i] == "" {
			continue
		}
		ast, issues := env.Compile(args[i])
		if issues != nil && issues.Err() != nil {
			fmt.Fprintln(os.Stderr, "flux-cel:", issues.Err())
			return 1
		}
		program, err := env.Program(ast)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flux-cel:", err)
			return 1
		}
		value, _, err := program.Eval(u.UnstructuredContent())
		if err != nil {
			fmt.Fprintln(os.Stderr, "flux-cel:", err)
			return 1
		}
		if value.Value() == true {
			return printVerdict(verdict{Status: outcome, Message: args[i]})
		}
	}
	return printVerdict(verdict{Status: "InProgress", Message: "no expression is true"})
}

func runKstatus(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "usage: kube-harness kstatus < object.json")
		return 2
	}
	obj, err := readObject()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		return 1
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		return 1
	}
	return printVerdict(verdict{Status: res.Status.String(), Message: res.Message})
}

// Argo CD's health status codes; anything else it reports as Unknown.
var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

func runLua(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: kube-harness lua SCRIPT.lua < object.json")
		return 2
	}
	script, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lua:", err)
		return 1
	}
	obj, err := readObject()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lua:", err)
		return 1
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// Argo CD opens only these (plus a reduced os library we do not need): a
	// script that calls string.* or io.* fails here as it would there.
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		l.Push(l.NewFunction(open))
		l.Push(lua.LString(name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(script)); err != nil {
		fmt.Fprintln(os.Stderr, "lua:", err)
		return 1
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fmt.Fprintln(os.Stderr, "lua: the script did not return a table")
		return 1
	}
	v := verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
	if !healthCodes[v.Status] {
		v = verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return printVerdict(v)
}

// toLua converts decoded JSON as Argo CD's decodeValue does: objects and arrays
// become tables (arrays 1-based), numbers, strings and booleans their Lua values.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for i, item := range v {
			t.RawSetInt(i+1, toLua(l, item))
		}
		return t
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}
