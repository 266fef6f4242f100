from avemotion import paper, registry


def test_class_order_is_alphabetical_and_complete():
    assert paper.CLASSES == ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
    assert set(paper.CLASSES) == set(paper.EMOTION_CODES.values())


def test_windows():
    assert paper.SAMPLES_PER_FRAME == 1600
    assert paper.N_SAMPLES == 140_800
    assert paper.N_CLIPS == 1440


def test_folds_partition_the_24_actors():
    actors = [a for fold in paper.FOLDS.values() for a in fold]
    assert sorted(actors) == list(range(1, 25))
    assert paper.FOLDS[3] == (8, 17, 21, 23, 24)


def test_table2_cells_cover_the_grid_minus_the_corner():
    cells = paper.table2_cells()
    assert len(cells) == 8 * 3 - 1
    assert ("None", "LMS", "lms") in cells
    assert ("Eyes + Mouth ResNets", "LMS", "eyes_resnet+mouth_resnet+lms") in cells


def test_published_values_have_a_value_or_caveat_for_every_cell():
    pub = paper.published_values()
    for key, *_ in paper.TABLE1_ROWS:
        assert len(pub["table1"]["rows"][key]) == 8
    assert pub["table1"]["rows"]["lms"][0] == 0.83
    assert pub["table1"]["rows"]["lms"][2] is None and "lms/disgust" in pub["table1"]["ranges"]
    assert {c for _, _, c in paper.table2_cells()} == set(pub["table2"]["cells"])
    assert pub["table2"]["cells"]["face_resnet+wav2vec2_large"] == 83.57


def test_registry_matches_the_table_layouts():
    for key, *_ in paper.TABLE1_ROWS:
        assert key in registry.FEATURES
    for _, _, configuration in paper.table2_cells():
        registry.split_configuration(configuration)
    assert registry.get("lms").dims == 24 and registry.get("lms").frames == 88
