use super::*;

const GOOD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n";

#[test]
fn names_and_uids_the_kubelet_way() {
    let p = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "Node1")
        .expect("valid")
        .pod;
    assert_eq!(p.pod_ref.name, "web-node1");
    assert_eq!(p.pod_ref.namespace, "default");
    assert_eq!(p.pod_ref.uid.len(), 32);
    assert_eq!(
        p.pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION)),
        Some(&p.pod_ref.uid)
    );
    assert_eq!(
        p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("Node1")
    );
}

#[test]
fn uid_is_stable_across_formatting_and_changes_with_content() {
    let a = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "n")
        .expect("valid")
        .pod;
    let reformatted = format!("# a comment\n{GOOD}\n");
    let b = decode(Path::new("/m/web.yaml"), reformatted.as_bytes(), "n")
        .expect("valid")
        .pod;
    assert_eq!(a.pod_ref.uid, b.pod_ref.uid);
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"busybox:1.35"}]}}"#;
    let c = decode(Path::new("/m/web.yaml"), json.as_bytes(), "n")
        .expect("valid json")
        .pod;
    assert_eq!(
        a.pod_ref.uid, c.pod_ref.uid,
        "JSON and YAML of one pod agree"
    );
    let edited = GOOD.replace("1.35", "1.36");
    let d = decode(Path::new("/m/web.yaml"), edited.as_bytes(), "n")
        .expect("valid")
        .pod;
    assert_ne!(a.pod_ref.uid, d.pod_ref.uid);
    let other_file = decode(Path::new("/m/web2.yaml"), GOOD.as_bytes(), "n")
        .expect("valid")
        .pod;
    assert_ne!(a.pod_ref.uid, other_file.pod_ref.uid);
    let other_node = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "m")
        .expect("valid")
        .pod;
    assert_ne!(a.pod_ref.uid, other_node.pod_ref.uid);
}

#[test]
fn missing_image_names_the_field() {
    let bad = GOOD.replace("    image: busybox:1.35\n", "");
    let err = decode(Path::new("/m/bad.yaml"), bad.as_bytes(), "n").expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.contains("/m/bad.yaml"), "{msg}");
    assert!(
        msg.contains("spec.containers[0].image: Required value"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_the_field_path() {
    let bad = GOOD.replace(
        "    image: busybox:1.35\n",
        "    image: busybox\n    ports:\n    - containerPort: eighty\n",
    );
    let err = decode(Path::new("/m/bad.yaml"), bad.as_bytes(), "n").expect_err("invalid");
    let msg = err.to_string();
    assert!(
        msg.contains("spec.containers[0].ports[0].containerPort"),
        "{msg}"
    );
}

#[test]
fn broken_yaml_and_empty_files_are_errors() {
    for data in ["spec: [unclosed", "", "   \n"] {
        let err = decode(Path::new("/m/x.yaml"), data.as_bytes(), "n");
        assert!(err.is_err(), "{data:?}");
    }
}

#[test]
fn second_document_is_ignored_with_a_warning() {
    let two = format!("{GOOD}---\n{}", GOOD.replace("web", "other"));
    let d = decode(Path::new("/m/two.yaml"), two.as_bytes(), "n").expect("first doc");
    assert_eq!(d.pod.pod_ref.name, "web-n");
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("/m/two.yaml"));
}

#[test]
fn duplicate_container_names_and_bad_policy() {
    let bad = "metadata: {name: p}\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: a, image: x}\n  - {name: a, image: x}\n";
    let err = decode(Path::new("/m/p.yaml"), bad.as_bytes(), "n").expect_err("invalid");
    let msg = err.to_string();
    assert!(
        msg.contains("spec.restartPolicy: Unsupported value"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.containers[1].name: Duplicate value"),
        "{msg}"
    );
}

#[test]
fn hostname_override_is_checked_as_the_api_server_does() {
    let ok = "metadata: {name: p}\nspec:\n  hostnameOverride: override.example.host\n  containers:\n  - {name: a, image: x}\n";
    decode(Path::new("/m/p.yaml"), ok.as_bytes(), "n").expect("valid");
    let bad = "metadata: {name: p}\nspec:\n  hostnameOverride: Not-RFC1123\n  hostNetwork: true\n  setHostnameAsFQDN: true\n  containers:\n  - {name: a, image: x}\n";
    let msg = decode(Path::new("/m/p.yaml"), bad.as_bytes(), "n")
        .expect_err("invalid")
        .to_string();
    for want in [
        "spec.hostnameOverride: Forbidden: may not be specified when setHostnameAsFQDN is true",
        "spec.hostnameOverride: Forbidden: may not be specified when hostNetwork is true",
        "spec.hostnameOverride: Invalid value: \"Not-RFC1123\"",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
}

#[test]
fn static_pods_may_use_downward_api_volumes_but_no_api_objects() {
    let ok = "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x, volumeMounts: [{name: info, mountPath: /info}]}\n  volumes:\n  - name: info\n    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: l, fieldRef: {fieldPath: \"metadata.labels['x']\"}}, {path: m, resourceFieldRef: {containerName: a, resource: limits.memory}}]}\n";
    decode(Path::new("/m/p.yaml"), ok.as_bytes(), "n").expect("downwardAPI is allowed");
    let bad = "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x}\n  volumes:\n  - name: info\n    downwardAPI: {items: [{path: ../x, fieldRef: {fieldPath: spec.nodeName}}, {path: y, resourceFieldRef: {resource: limits.cpu}}]}\n  - name: cm\n    configMap: {name: c}\n";
    let msg = decode(Path::new("/m/p.yaml"), bad.as_bytes(), "n")
        .expect_err("invalid")
        .to_string();
    for want in [
        "spec.volumes[0].downwardAPI.items[0].path: Invalid value",
        "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: Unsupported value",
        "spec.volumes[0].downwardAPI.items[1].resourceFieldRef.containerName: Required value",
        "spec.volumes[1].configMap: Unsupported value",
    ] {
        assert!(msg.contains(want), "{want} in {msg}");
    }
}
