use super::*;

/// What `vmkdir` sends (CADC vos 3.7): three prefixes for one namespace.
const VMKDIR: &str = r#"<node xmlns:ns1="http://www.ivoa.net/xml/VOSpace/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://www.ivoa.net/xml/VOSpace/v2.0" xmlns:vos="http://www.ivoa.net/xml/VOSpace/v2.0" xsi:type="vos:ContainerNode" uri="vos://aster.example!vospace/dir1"><ns1:properties /><ns1:accepts><view uri="ivo://ivoa.net/vospace/core#defaultview" /></ns1:accepts><ns1:provides><view uri="ivo://ivoa.net/vospace/core#defaultview" /></ns1:provides><ns1:nodes /></node>"#;

/// What `vchmod g-r` then `g+r` send.
const VCHMOD: &str = r#"<ns0:node xmlns:ns0="http://www.ivoa.net/xml/VOSpace/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" uri="vos://aster.example!vospace/dir1/f.txt" xsi:type="vos:DataNode"><ns0:properties><ns0:property readOnly="false" uri="ivo://ivoa.net/vospace/core#groupread">ivo://cadc.nrc.ca/gms?grp1</ns0:property><ns0:property readOnly="false" uri="ivo://ivoa.net/vospace/core#groupwrite" xsi:nil="true" /></ns0:properties><ns0:accepts /><ns0:provides /></ns0:node>"#;

#[test]
fn reads_client_nodes_whatever_the_prefixes() {
    let d = parse_node(VMKDIR).unwrap();
    assert_eq!(d.xsi_type.as_deref(), Some("ContainerNode"));
    assert_eq!(d.uri.as_deref(), Some("vos://aster.example!vospace/dir1"));
    assert!(d.props.is_empty());
    let d = parse_node(VCHMOD).unwrap();
    assert_eq!(
        d.props.get("ivo://ivoa.net/vospace/core#groupread"),
        Some(&Some("ivo://cadc.nrc.ca/gms?grp1".to_string()))
    );
    assert_eq!(
        d.props.get("ivo://ivoa.net/vospace/core#groupwrite"),
        Some(&None)
    );
    let link = parse_node(
        r#"<vos:node xmlns:vos="http://www.ivoa.net/xml/VOSpace/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" uri="vos://a!vospace/u/l" xsi:type="vos:LinkNode"><vos:target>vos://a!vospace/u/f&amp;g</vos:target></vos:node>"#,
    )
    .unwrap();
    assert_eq!(link.target.as_deref(), Some("vos://a!vospace/u/f&g"));
    // A child listing sent back does not become the node's own properties.
    let with_kids = parse_node(
        r#"<node xmlns="http://www.ivoa.net/xml/VOSpace/v2.0" uri="vos://a!vospace/u"><nodes><node uri="vos://a!vospace/u/c"><properties><property uri="ivo://x#p">1</property></properties></node></nodes></node>"#,
    )
    .unwrap();
    assert!(with_kids.props.is_empty());
}

#[test]
fn refuses_what_is_not_a_node() {
    for bad in ["", "<transfer/>", "<node", "not xml at all <<<"] {
        assert!(parse_node(bad).is_err(), "{bad}");
    }
}

#[test]
fn reads_transfers() {
    let push = parse_transfer(
        r#"<vos:transfer xmlns:vos="http://www.ivoa.net/xml/VOSpace/v2.0" version="2.1"><vos:target>vos://aster.example!vospace/dir1/f.txt</vos:target><vos:direction>pushToVoSpace</vos:direction><vos:protocol uri="ivo://ivoa.net/vospace/core#httpsput"><vos:securityMethod uri="ivo://ivoa.net/sso#token"/></vos:protocol><vos:protocol uri="ivo://ivoa.net/vospace/core#httpput" /></vos:transfer>"#,
    )
    .unwrap();
    assert_eq!(push.direction, "pushToVoSpace");
    assert_eq!(
        push.protocols,
        [
            "ivo://ivoa.net/vospace/core#httpsput",
            "ivo://ivoa.net/vospace/core#httpput"
        ]
    );
    let mv = parse_transfer(
        r#"<vos:transfer xmlns:vos="http://www.ivoa.net/xml/VOSpace/v2.0" version="2.1"><vos:target>vos://a!vospace/u/f</vos:target><vos:direction>vos://a!vospace/u/g</vos:direction><vos:keepBytes>false</vos:keepBytes></vos:transfer>"#,
    )
    .unwrap();
    assert_eq!(mv.direction, "vos://a!vospace/u/g");
    assert!(!mv.keep_bytes);
    assert!(
        parse_transfer("<vos:transfer xmlns:vos=\"x\"><vos:target>t</vos:target></vos:transfer>")
            .is_err()
    );
}
