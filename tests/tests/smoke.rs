use hickory_proto::rr::RecordType;
use namewall_tests::{dnswire, harness::Harness, packet::{Spec, Vlan, V6Ext}};

#[test]
fn loads_and_answers() {
    let h = Harness::new("example.com\n", "");
    for spec in [Spec::udp4(), Spec::udp6(), Spec::udp4().v4_options(&[1,1,1,0]), Spec::udp6().v6_ext(V6Ext::All).vlan(Vlan::Double(5,6))] {
        for name in ["www.Example.com.", "example.com", "a.b.c.example.com"] {
        let o = h.run(&spec.build(&dnswire::query(name, RecordType::A)));
        println!("{:?} {:?} {:?}", o.action_name(), o.outcome, h.rule_name(&o));
        let a = dnswire::parse_answer(&o.output);
        println!("{:?}", a.map(|a| (a.src_ip, a.dst_ip, a.ip_extras, a.vlan_ids, a.message.response_code())));
        }
    }
}
