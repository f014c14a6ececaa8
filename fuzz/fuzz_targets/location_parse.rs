//! Location::parse and check_canonical on arbitrary strings. Whatever parse accepts
//! is canonical: from_canonical accepts its text and gives the same location, and
//! parsing it again changes nothing. Whatever check_canonical accepts parses to itself.
#![no_main]

use gale_proto::limits::{MAX_LOCATION_LEN, MAX_SEGMENTS};
use gale_proto::location::check_canonical;
use gale_proto::Location;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loc) = Location::parse(s) {
        let text = loc.as_str();
        assert!(text.len() <= MAX_LOCATION_LEN);
        assert!(loc.segments().count() <= MAX_SEGMENTS);
        assert_eq!(check_canonical(text), Ok(loc.local().len()));
        assert_eq!(Location::from_canonical(text).as_ref(), Ok(&loc));
        assert_eq!(Location::parse(text).as_ref(), Ok(&loc));
        assert!(loc.covers(&loc));
        let _ = loc.reserved();
    }
    if let Ok(at) = check_canonical(s) {
        let loc = Location::from_canonical(s).expect("check_canonical accepted it");
        assert_eq!(loc.as_str(), s);
        assert_eq!(loc.local().len(), at);
        assert_eq!(Location::parse(s).as_ref(), Ok(&loc));
    }
});
