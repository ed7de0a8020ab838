use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Angles equal modulo 360 degrees.
fn same_angle(a: f64, b: f64, tol: f64) -> bool {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d) <= tol
}

#[test]
fn elements_survive_a_round_trip_through_state_vectors() {
    for (a, e, i, node, w, m) in [
        (2.7, 0.08, 10.6, 80.3, 73.0, 120.0),
        (1.5, 0.45, 32.0, 200.0, 310.0, 5.0),
        (3.2, 0.95, 150.0, 12.0, 1.0, 359.0),
        (0.9, 0.2, 0.5, 300.0, 180.0, 181.0),
    ] {
        let o = KeplerOrbit::new(a, e, i, node, w, m, 61_000.0).unwrap();
        let (r, v) = o.state_at(61_000.0);
        let back = KeplerOrbit::from_state(r, v, 61_000.0).unwrap();
        assert!(close(back.a(), a, 1e-10 * a), "{back:?}");
        assert!(close(back.e(), e, 1e-10), "{back:?}");
        assert!(close(back.i_deg(), i, 1e-8), "{back:?}");
        assert!(same_angle(back.node_deg(), node, 1e-8), "{back:?}");
        assert!(same_angle(back.argperi_deg(), w, 1e-7), "{back:?}");
        assert!(same_angle(back.mean_anomaly_deg(), m, 1e-7), "{back:?}");
    }
}

#[test]
fn an_orbit_returns_after_one_period_and_conserves_energy() {
    let o = KeplerOrbit::new(2.2, 0.3, 7.0, 40.0, 100.0, 30.0, 60_000.0).unwrap();
    // Kepler's third law: a^1.5 years of 365.2569 days (the Gaussian year).
    assert!(close(o.period(), 2.2f64.powf(1.5) * 365.256_898_3, 1e-3));
    let (r0, v0) = o.state_at(60_000.0);
    let (r1, v1) = o.state_at(60_000.0 + o.period());
    assert!((r1 - r0).norm() < 1e-10 && (v1 - v0).norm() < 1e-12);
    let energy = |r: Vec3, v: Vec3| v.dot(v) / 2.0 - GM_SUN / r.norm();
    let (r2, v2) = o.state_at(60_400.0);
    assert!(close(energy(r0, v0), energy(r2, v2), 1e-15));
    assert!(close(energy(r0, v0), -GM_SUN / (2.0 * 2.2), 1e-15));
    // Perihelion: the nearest point.
    let (rq, _) = o.state_at(o.perihelion_time());
    assert!(close(rq.norm(), o.q(), 1e-9));
}

#[test]
fn the_earth_is_where_the_equinox_and_perihelion_put_it() {
    // The March equinox of 2025: 2025-03-20 09:01 UTC, when the Sun's apparent longitude
    // (of date) is 0. The Earth's geometric heliocentric longitude is then 180 degrees plus
    // the aberration (20.5"), less the precession since J2000 (50.29"/yr for 25.2 years).
    let equinox = tt_from_tai(60_754.0 + (9.0 * 60.0 + 1.0 + 37.0 / 60.0) / 1440.0);
    let (r, v) = earth_state(equinox);
    let (lon, lat) = r.lon_lat().unwrap();
    let years = (equinox - J2000_MJD) / 365.25;
    let expected = 180.0 + (20.5 - 50.29 * years) / 3600.0;
    assert!(same_angle(lon, expected, 0.01), "{lon} {expected}");
    assert!(lat.abs() < 0.001);
    // Perihelion 2025-01-04 (0.98333 au) and aphelion 2025-07-03 (1.01665 au): the
    // barycentre's distances, within the Moon's displacement of the Earth.
    assert!(close(earth_state(60_679.6).0.norm(), 0.98333, 0.0002));
    assert!(close(earth_state(60_859.8).0.norm(), 1.01665, 0.0002));
    // About 29.8 km/s.
    assert!(close(v.norm() * KM_S_PER_AU_DAY, 29.8, 0.6));
}

#[test]
fn an_asteroid_at_opposition_moves_backwards_at_a_quarter_degree_a_day() {
    let mjd = 61_010.0;
    let (earth, _) = earth_state(mjd);
    let opposite = earth.ecliptic_to_equatorial().sky().unwrap();
    let o = orbit_through(opposite, 1.5, mjd, 1.0, 0.0).unwrap();
    let eph = ephemeris(&o, mjd);
    // The light-time corrected position is where the orbit was asked to pass.
    assert!(eph.position.separation(&opposite) * 3600.0 < 1e-3);
    assert!(close(eph.delta(), 1.5, 1e-9));
    assert!(close(eph.elongation, 180.0, 1e-6) && eph.phase_angle < 1e-6);
    // Retrograde: relative speed 29.8 - 29.8 / sqrt(2.5 au) km/s over 1.5 au.
    assert!(eph.rate_ra < 0.0, "{eph:?}");
    assert!((0.2..0.3).contains(&eph.rate()), "{}", eph.rate());
    // A circular orbit: the distance from the Sun does not change.
    assert!(eph.r_rate().abs() < 1e-9);
    // At zero phase, V = H + 5 log10(r delta).
    let v = eph.v_magnitude(15.0, 0.15);
    assert!(
        close(v, 15.0 + 5.0 * (eph.r() * 1.5f64).log10(), 1e-4),
        "{v}"
    );
    // A day later it has moved by its rate.
    let next = ephemeris(&o, mjd + 0.01);
    let moved = next.position.separation(&eph.position);
    assert!(close(moved, eph.rate() * 0.01, 0.02 * eph.rate() * 0.01));
}

#[test]
fn fields_away_from_the_ecliptic_take_inclined_orbits() {
    let mjd = 61_010.1;
    let field = SkyCoord::new(62.4, -36.6).unwrap();
    for tilt in [-0.4, 0.0, 0.4] {
        let o = orbit_through(field, 1.4, mjd, 1.05, tilt).unwrap();
        // Far from the ecliptic (latitude -57 degrees), the orbit must be steep.
        assert!(o.i_deg() > 25.0, "{o:?}");
        assert!(o.e() < 0.3);
        let eph = ephemeris(&o, mjd);
        assert!(eph.position.separation(&field) * 3600.0 < 1e-3);
        assert!((0.05..1.0).contains(&eph.rate()), "{}", eph.rate());
    }
}

#[test]
fn bad_elements_and_unbound_states_are_refused() {
    assert_eq!(
        KeplerOrbit::new(2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        Err(OrbitError::Eccentricity(1.0))
    );
    assert_eq!(
        KeplerOrbit::new(-2.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0),
        Err(OrbitError::SemiMajorAxis(-2.0))
    );
    assert!(matches!(
        KeplerOrbit::new(2.0, 0.1, f64::NAN, 0.0, 0.0, 0.0, 0.0),
        Err(OrbitError::NotFinite("inclination"))
    ));
    let r = Vec3::new(1.0, 0.0, 0.0);
    let escape = (2.0 * GM_SUN).sqrt() * 1.01;
    assert!(matches!(
        KeplerOrbit::from_state(r, Vec3::new(0.0, escape, 0.0), 0.0),
        Err(OrbitError::Unbound(_))
    ));
}
